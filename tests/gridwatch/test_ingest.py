"""MqttIngest's process-wide settings: the garbage collector's thresholds for the hot
path while an ingest runs, put back when the last one stops."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from configs.mqtt import MqttConnection
from gridwatch.gc_tuning import GC_THRESHOLDS
from gridwatch.ingest import MqttIngest
from tests.support.mosquitto import free_port


@pytest.fixture
def own_thresholds() -> Iterator[tuple[int, int, int]]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield (700, 10, 10)
    gc.set_threshold(*saved)


def _ingest(**kwargs: object) -> MqttIngest:
    # nothing listens there: the client retries in the background, which is all we need
    return MqttIngest(MqttConnection(port=free_port()), None,  # type: ignore[arg-type]
                      isolate=False, **kwargs)


def test_the_hot_path_thresholds_hold_while_any_ingest_runs(
        own_thresholds: tuple[int, int, int]) -> None:
    frozen = gc.get_freeze_count()
    first, second = _ingest(), _ingest()
    first.start()
    second.start()
    try:
        assert gc.get_threshold() == GC_THRESHOLDS
        first.stop()
        assert gc.get_threshold() == GC_THRESHOLDS  # the second still runs
    finally:
        first.stop()
        second.stop()
    assert gc.get_threshold() == own_thresholds
    assert gc.get_freeze_count() == frozen  # start-up objects unfrozen again


def test_tune_gc_false_leaves_the_process_alone(own_thresholds: tuple[int, int, int]) -> None:
    ingest = _ingest(tune_gc=False)
    ingest.start()
    try:
        assert gc.get_threshold() == own_thresholds
    finally:
        ingest.stop()


def test_a_hot_path_process_freezes_its_start_up_objects(
        own_thresholds: tuple[int, int, int]) -> None:
    from gridwatch.gc_tuning import tune_process

    built_at_start_up = [[n] for n in range(1000)]
    frozen = gc.get_freeze_count()
    try:
        tune_process()  # what a worker, a bridge and the MQTT child call once
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() >= frozen + len(built_at_start_up)
    finally:
        gc.unfreeze()
        gc.collect()
