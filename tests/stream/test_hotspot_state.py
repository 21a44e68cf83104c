"""Hot-spot checkpoints: a restored processor continues exactly as the original; the
format is versioned, upgraded step by step, and refuses what it cannot read."""

from __future__ import annotations

import json
import struct
import zlib
from datetime import datetime, timedelta
from typing import Any

import pytest

from detectors.schema import Detection, parse_detection
from gridwatch.config import load_config
from stream import hotspot_state
from stream.hotspot import HOUR_S, HotspotEngine
from stream.processor import StreamProcessor
from stream.types import HotspotFinding
from tests.support.hotspot_scenarios import Scenario, ScenarioSpec

SPEC = ScenarioSpec(rows=4, cols=4, days=5, n_clusters=1, seed=5, town_block=4,
                    cluster_earliest_day=3, cluster_strengths=(6.0,), cluster_hours=(24,),
                    rate_bands=((1.0, 20.0, 40.0),))
CONFIG = load_config()
HOTSPOT = CONFIG.hotspot.model_copy(update={"warmup_s": 3 * 86400})
SCENARIO = Scenario.generate(SPEC)


def detections() -> list[Detection]:
    """The scenario's riders; every third seen again 5 s later on the same track."""
    out = []
    for i, raw in enumerate(SCENARIO.detection_lines()):
        out.append(parse_detection(raw))
        if i % 3 == 0:
            obj = json.loads(raw)
            obj["event_id"] += "-f2"
            obj["observed_at"] = (datetime.fromisoformat(obj["observed_at"])
                                  + timedelta(seconds=5)).isoformat()
            out.append(parse_detection(json.dumps(obj)))
    return out


def processor(lateness_s: int = 0) -> StreamProcessor:
    stream = CONFIG.stream.model_copy(update={"lateness_s": lateness_s})
    return StreamProcessor(stream, CONFIG.policies, HotspotEngine(HOTSPOT, SCENARIO.grid))


def feed(proc: StreamProcessor, items: list[Detection]) -> list[str]:
    cells = {c.lon_lat: c.cell_id for c in SCENARIO.grid.cells}
    out = []
    for d in items:
        cell = cells[(d.lon, d.lat)]
        out += [json.dumps(o.as_ticket_hotspot() | {"cell": o.cell_id}, default=str)
                for o in proc.push(d, cell) if isinstance(o, HotspotFinding)]
    return out


def test_a_restored_processor_finds_what_the_original_finds() -> None:
    items = detections()
    straight = processor()
    expected = feed(straight, items) + [
        json.dumps(f.as_ticket_hotspot() | {"cell": f.cell_id}, default=str)
        for f in straight.flush() if isinstance(f, HotspotFinding)]
    assert expected, "the injected cluster must be found"
    cut = int(len(items) * 0.7) + 5
    first = processor()
    before = feed(first, items[:cut])
    data = hotspot_state.dump(first)
    restored = processor()
    hotspot_state.restore(restored, data)
    assert hotspot_state.dump(restored) == data
    trails = [t for state in restored.hotspots._kinds.values() for t in state.evidence.values()]
    assert trails and all(t.ordered == (list(t.hours) == sorted(t.hours)) for t in trails)
    after = feed(restored, items[cut:]) + [
        json.dumps(f.as_ticket_hotspot() | {"cell": f.cell_id}, default=str)
        for f in restored.flush() if isinstance(f, HotspotFinding)]
    assert before + after == expected
    assert restored.stats.absorbed > 0  # open tracks carried over and kept absorbing


def test_held_event_ids_cover_the_trails() -> None:
    proc = processor()
    items = detections()[:400]
    feed(proc, items)
    held = {e for e, _ in hotspot_state.held_event_ids(proc)}
    assert {d.event_id for d in items} <= held


def test_a_processor_holding_buffered_detections_is_not_dumped() -> None:
    proc = processor(lateness_s=600)
    feed(proc, detections()[:50])
    with pytest.raises(ValueError, match="reorder buffer"):
        hotspot_state.dump(proc)
    proc.release()
    assert hotspot_state.dump(proc)[:4] == b"GWHS"


def _with_format(data: bytes, version: int) -> bytes:
    return data[:4] + struct.pack(">I", version) + data[8:]


@pytest.mark.parametrize(("data", "error"), [
    (b"", "no GWHS header"),
    (b"JUNKJUNKJUNK", "no GWHS header"),
    (b"GWHS" + struct.pack(">I", 1) + b"not zlib", "damaged"),
    (b"GWHS" + struct.pack(">I", 1) + zlib.compress(b"not an npz"), "damaged"),
])
def test_unreadable_checkpoints_are_refused_with_the_reason(data: bytes, error: str) -> None:
    with pytest.raises(hotspot_state.CheckpointError, match=error):
        hotspot_state.restore(processor(), data)


def test_a_newer_format_is_refused_and_an_older_one_upgraded(
        monkeypatch: pytest.MonkeyPatch) -> None:
    proc = processor()
    feed(proc, detections()[:300])
    data = hotspot_state.dump(proc)
    current = hotspot_state.FORMAT
    with pytest.raises(hotspot_state.CheckpointError, match="newer"):
        hotspot_state.restore(processor(), _with_format(data, current + 1))
    # a next format that renamed a meta key: today's checkpoints are upgraded by the step
    steps: list[int] = []

    def upgrade(meta: dict, arrays: dict) -> tuple[dict, dict]:  # type: ignore[type-arg]
        steps.append(meta["format"])
        meta["late_dropped_next"] = meta.pop("late_dropped")
        return meta, arrays

    monkeypatch.setattr(hotspot_state, "FORMAT", current + 1)
    monkeypatch.setitem(hotspot_state.UPGRADES, current, upgrade)
    meta, _ = hotspot_state.read(data)
    assert steps == [current] and meta["format"] == current + 1 and \
        "late_dropped_next" in meta
    monkeypatch.delitem(hotspot_state.UPGRADES, current)
    with pytest.raises(hotspot_state.CheckpointError, match="no upgrade from"):
        hotspot_state.read(data)


def _rewritten(data: bytes, version: int, edit: Any) -> bytes:
    """``data`` with its meta changed by ``edit`` and written as format ``version``."""
    meta, arrays = hotspot_state.read(data)
    edit(meta)
    return hotspot_state.write(meta, arrays, version)


def _moved(d: Detection, event_id: str, by: timedelta, **fields: Any) -> Detection:
    return d.model_copy(update={"event_id": event_id, "observed_at": d.observed_at + by,
                                **fields})


def test_occurrences_waiting_to_confirm_a_jump_survive_a_restore() -> None:
    """One camera's sighting two days ahead of the clock waits for a second source; a
    checkpoint taken meanwhile keeps it (and what dedup absorbed into it), so the
    restored stage counts it when the second one comes, as the original does."""
    items = detections()[:600]
    last = items[-1]
    ahead = _moved(last, "ahead-1", timedelta(days=2), track_id="far-track")
    again = _moved(last, "ahead-1b", timedelta(days=2, seconds=5), track_id="far-track")
    other = _moved(last, "ahead-2", timedelta(days=2, minutes=10), source_id="cam-other",
                   track_id=None)

    def trails(proc: StreamProcessor) -> list[tuple[int, list[list[str]]]]:
        return sorted((idx, [list(ids) for ids in t.ids]) for state in
                      proc.hotspots._kinds.values() for idx, t in state.evidence.items())

    straight = processor()
    expected = feed(straight, [*items, ahead, again, other])
    first = processor()
    before = feed(first, [*items, ahead, again])
    assert [occ.event_ids for _, _, occ, _ in first.hotspots._ahead] == \
        [["ahead-1", "ahead-1b"]]  # waiting, with the sighting its track absorbed
    data = hotspot_state.dump(first)
    restored = processor()
    hotspot_state.restore(restored, data)
    assert hotspot_state.dump(restored) == data
    held = dict(hotspot_state.held_event_ids(restored))
    assert held["ahead-1"] == held["ahead-1b"] == ahead.observed_at.timestamp()
    assert before + feed(restored, [other]) == expected
    assert trails(restored) == trails(straight)
    assert restored.hotspots.open_hour == straight.hotspots.open_hour == \
        int((other.observed_at.timestamp() + HOTSPOT.utc_offset_s) // HOUR_S)

    # a format-1 checkpoint (before far-ahead occurrences were kept) still restores
    old = _rewritten(data, 1, lambda meta: (meta["dedup"].pop("ahead"),
                                            meta.pop("ahead_dropped")))
    upgraded = processor()
    hotspot_state.restore(upgraded, old)
    assert upgraded.hotspots._ahead == []
    assert trails(upgraded) == trails(first)


def test_a_checkpoint_of_another_grid_is_refused() -> None:
    proc = processor()
    feed(proc, detections()[:100])
    data = hotspot_state.dump(proc)
    other = Scenario.generate(ScenarioSpec(rows=3, cols=3, days=1, n_clusters=0))
    stranger = StreamProcessor(CONFIG.stream, CONFIG.policies,
                               HotspotEngine(HOTSPOT, other.grid))
    with pytest.raises(hotspot_state.CheckpointError, match="another grid"):
        hotspot_state.restore(stranger, data)
