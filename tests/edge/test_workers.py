"""The frame queue between a camera's reader and detector drops the OLDEST frame when full."""

from __future__ import annotations

import threading
import time

import pytest

from edge.workers import DropOldestQueue, Workers


def drain(queue: DropOldestQueue[int]) -> list[int]:
    out = []
    while (item := queue.get(timeout_s=0.01)) is not None:
        out.append(item)
    return out


@pytest.mark.parametrize(
    ("maxsize", "items", "dropped_per_put", "left"),
    [
        (1, [1], [0], [1]),
        (1, [1, 2, 3], [0, 1, 1], [3]),  # the newest frame always gets in
        (2, [1, 2], [0, 0], [1, 2]),
        (2, [1, 2, 3, 4, 5], [0, 0, 1, 1, 1], [4, 5]),  # oldest out, order kept
        (3, [1, 2, 3, 4], [0, 0, 0, 1], [2, 3, 4]),
    ],
)
def test_put_drops_the_oldest_items_when_full(maxsize: int, items: list[int],
                                              dropped_per_put: list[int],
                                              left: list[int]) -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(maxsize)
    assert [queue.put(item) for item in items] == dropped_per_put
    assert drain(queue) == left


@pytest.mark.parametrize("maxsize", [0, -1])
def test_a_queue_needs_room_for_one_item(maxsize: int) -> None:
    with pytest.raises(ValueError, match=f"expected >= 1, got {maxsize}"):
        DropOldestQueue(maxsize)


def test_get_times_out_with_none() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(1)
    started = time.monotonic()
    assert queue.get(timeout_s=0.05) is None
    assert time.monotonic() - started >= 0.04


def test_a_slow_consumer_sees_the_newest_items_and_every_loss_is_counted() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(2)
    seen: list[int] = []
    done = threading.Event()

    def consume() -> None:
        while not done.is_set() or queue.qsize():
            item = queue.get(timeout_s=0.01)
            if item is not None:
                seen.append(item)
                time.sleep(0.002)  # slower than the producer

    consumer = threading.Thread(target=consume)
    consumer.start()
    dropped = sum(queue.put(i) for i in range(500))
    done.set()
    consumer.join(5)
    assert dropped > 0
    assert len(seen) + dropped == 500
    assert seen == sorted(seen)  # never out of order
    assert seen[-1] == 499  # the newest item survives


def test_put_wait_waits_for_room_and_gives_up_on_stop() -> None:
    queue: DropOldestQueue[int] = DropOldestQueue(1)
    stop = threading.Event()
    assert queue.put_wait(1, stop)
    threading.Timer(0.1, lambda: queue.get(0)).start()
    started = time.monotonic()
    assert queue.put_wait(2, stop, poll_s=0.02)  # waits until the timer takes item 1
    assert time.monotonic() - started >= 0.08
    assert drain(queue) == [2]
    queue.put(3)
    threading.Timer(0.05, stop.set).start()
    assert not queue.put_wait(4, stop, poll_s=0.02)
    assert drain(queue) == [3]


def test_a_worker_that_dies_is_restarted() -> None:
    runs: list[int] = []

    def factory() -> object:
        def run(stop: threading.Event) -> None:
            runs.append(1)
            if len(runs) == 1:
                raise RuntimeError("boom")
            stop.wait()
        return run

    workers = Workers(max_backoff_s=0.5)
    workers.add("w", factory)  # type: ignore[arg-type]
    workers.start()
    try:
        deadline = time.monotonic() + 5
        while len(runs) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(runs) == 2
        assert workers.restarts() == {"w": 1}
        assert workers.alive() == {"w": True}
    finally:
        workers.stop()
