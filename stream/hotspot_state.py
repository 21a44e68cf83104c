"""Checkpoints of the hot-spot side of a :class:`~stream.processor.StreamProcessor`: the
engine (baselines, dispersion, the hour clock, the open hour's counts, the window rings,
active hot spots, evidence trails, occurrences far ahead waiting for a second source to
confirm a jump of the clock) and the occurrence deduper (open tracks), as bytes.

Pure: no I/O, no clock. Where the bytes are kept is the runtime's business (the embedded
service writes them into the ticket store, :mod:`ticketing.checkpoints`).

Restoring a checkpoint into a processor built with the same grid and windows gives a
processor that continues exactly as the one that wrote it would have: the same input
afterwards gives the same findings (floats are stored as their bytes, not as text).

The format is versioned (:data:`FORMAT`). A checkpoint of an older format is upgraded
step by step by :data:`UPGRADES` (``{version: function(meta, arrays) -> (meta, arrays)}``
taking version ``v`` to ``v + 1``), like the ticket schema's migrations; a newer one is
refused with a clear error. To change the format, bump :data:`FORMAT` and add the step
from the previous one; never edit a step that has shipped.

Layout: ``b"GWHS"``, the format version (4 bytes, big-endian), then a zlib-compressed
``.npz`` (numpy arrays, no pickles) whose ``meta`` entry is UTF-8 JSON.
"""

from __future__ import annotations

import hashlib
import io
import json
import operator
import struct
import zlib
from collections import deque
from collections.abc import Callable
from datetime import datetime
from itertools import chain
from typing import Any

import numpy as np

from stream.dedup import OccurrenceDeduper, _Recent
from stream.hotspot import HOUR_S, HotspotEngine, _Active, _KindState, _Trail
from stream.processor import StreamProcessor
from stream.types import Occurrence

MAGIC = b"GWHS"
FORMAT = 2

Arrays = dict[str, np.ndarray]
Upgrade = Callable[[dict[str, Any], Arrays], tuple[dict[str, Any], Arrays]]


def _v1_to_v2(meta: dict[str, Any], arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
    """Format 2 keeps the engine's far-ahead occurrences (waiting for a second source to
    confirm a jump of the hour clock); a format-1 checkpoint had none saved."""
    meta["dedup"].setdefault("ahead", [])
    meta.setdefault("ahead_dropped", 0)
    return meta, arrays


# version v -> the step to v + 1
UPGRADES: dict[int, Upgrade] = {1: _v1_to_v2}

# the numpy fields of a kind's state, in a fixed order
_ARRAY_FIELDS = ("slot_sum", "slot_weight", "level_count", "level_exposure", "group_sum",
                 "group_weight", "first_hour", "active", "current", "observed_ring",
                 "expected_ring", "expected_var_ring", "phi", "phi_num", "phi_den",
                 "total_observed", "total_expected")


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored into this processor (damaged, a newer
    format, or written for another grid or other windows); says which."""


def fingerprint(engine: HotspotEngine) -> str:
    """What a checkpoint must match to be restored: the cells (ids, in order), their
    baseline groups and the windows. Other settings (thresholds, half-lives) may change
    between runs; the state carries over."""
    key = json.dumps({"cells": engine.cell_ids, "groups": engine._group.tolist(),
                      "windows_h": list(engine._window_h)}, separators=(",", ":"))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def dump(processor: StreamProcessor) -> bytes:
    """The hot-spot state of ``processor`` as bytes (see the module doc for the layout).

    Raises:
        ValueError: the processor still holds detections in its reorder buffer (release
            them first: live processing has none).
    """
    if processor._buffer:
        raise ValueError(f"expected an empty reorder buffer, got "
                         f"{len(processor._buffer)} detections held")
    engine = processor.hotspots
    arrays: Arrays = {}
    kinds: list[dict[str, Any]] = []
    for k, name in enumerate(sorted(engine._kinds)):
        state = engine._kinds[name]
        for field in _ARRAY_FIELDS:
            arrays[f"k{k}.{field}"] = getattr(state, field)
        arrays.update(_dump_trails(f"k{k}.", state))
        kinds.append({
            "kind": name,
            "hotspots": [[s.centre, sorted(s.members), s.first_hour, s.last_hour,
                          s.reported_hour] for _, s in sorted(state.hotspots.items())],
        })
    meta = {
        "format": FORMAT,
        "fingerprint": fingerprint(engine),
        "hour": engine._hour,
        "late_dropped": engine.late_dropped,
        "unknown_cells": engine.unknown_cells,
        "ahead_dropped": engine.ahead_dropped,
        "kinds": kinds,
        "dedup": _dump_dedup(processor._occurrences, engine),
        "episodes": sorted(list(e) for e in processor._episodes),
    }
    return write(meta, arrays)


def write(meta: dict[str, Any], arrays: Arrays, version: int = FORMAT) -> bytes:
    """The bytes of a checkpoint holding ``meta`` and ``arrays`` as format ``version``
    (what :func:`read` reads back)."""
    body = dict(arrays)
    body["meta"] = np.frombuffer(json.dumps(meta, separators=(",", ":"),
                                            ensure_ascii=False).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, allow_pickle=False, **body)
    return MAGIC + struct.pack(">I", version) + zlib.compress(buffer.getvalue(), 1)


def read(data: bytes) -> tuple[dict[str, Any], Arrays]:
    """The checkpoint's metadata and arrays, upgraded to :data:`FORMAT`."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise CheckpointError("not a hot-spot checkpoint (no GWHS header)")
    (version,) = struct.unpack(">I", data[4:8])
    if version > FORMAT:
        raise CheckpointError(f"checkpoint format {version} is newer than this version of "
                              f"GridWatch reads (up to {FORMAT}); upgrade GridWatch")
    try:
        with np.load(io.BytesIO(zlib.decompress(data[8:])), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (zlib.error, OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"damaged hot-spot checkpoint: {exc}") from None
    while version < FORMAT:
        step = UPGRADES.get(version)
        if step is None:
            raise CheckpointError(f"no upgrade from checkpoint format {version}")
        meta, arrays = step(meta, arrays)
        version += 1
        meta["format"] = version
    return meta, arrays


def restore(processor: StreamProcessor, data: bytes) -> None:
    """Replace the hot-spot state of a freshly built ``processor`` with a checkpoint's.

    Raises:
        CheckpointError: damaged, of a newer format, or for another grid or windows.
    """
    meta, arrays = read(data)
    engine = processor.hotspots
    if meta["fingerprint"] != fingerprint(engine):
        raise CheckpointError("the checkpoint was written for another grid or other "
                              "hot-spot windows (cells, towns or windows_s changed)")
    n_cells = len(engine.cell_ids)
    engine._kinds = {}
    for k, saved in enumerate(meta["kinds"]):
        state = _KindState(n_cells, engine._n_groups, engine._ring_h,
                           len(engine._window_h), engine.settings.dispersion_init)
        for field in _ARRAY_FIELDS:
            value = arrays[f"k{k}.{field}"]
            current = getattr(state, field)
            if value.shape != current.shape or value.dtype != current.dtype:
                raise CheckpointError(f"checkpoint array {field} of {saved['kind']} is "
                                      f"{value.dtype}{value.shape}, expected "
                                      f"{current.dtype}{current.shape}")
            setattr(state, field, value.copy())
        for centre, members, first, last, reported in saved["hotspots"]:
            state.hotspots[centre] = _Active(centre, frozenset(members), first, last,
                                             reported)
        _restore_trails(f"k{k}.", state, arrays)
        engine._kinds[saved["kind"]] = state
    engine._hour = meta["hour"]
    engine.late_dropped = meta["late_dropped"]
    engine.unknown_cells = meta["unknown_cells"]
    engine.ahead_dropped = meta["ahead_dropped"]
    _restore_dedup(processor._occurrences, meta["dedup"], engine)
    processor._episodes = {tuple(e) for e in meta["episodes"]}  # type: ignore[misc]


def held_event_ids(processor: StreamProcessor) -> list[tuple[str, float]]:
    """(event id, an event time in its hour) of every detection the hot-spot state
    holds: for seeding a duplicate filter after a restore, so a detection the broker
    re-delivers is not counted twice."""
    engine = processor.hotspots
    # the far-ahead occurrences waiting for confirmation too: counted once confirmed
    out: list[tuple[str, float]] = [(event_id, ts) for _, _, occ, ts in engine._ahead
                                    for event_id in occ.event_ids]
    for state in engine._kinds.values():
        for trail in state.evidence.values():
            for hour, ids in zip(trail.hours, trail.ids, strict=True):
                ts = float(hour * HOUR_S - engine._offset_s)
                out.extend((event_id, ts) for event_id in ids)
    return out


def _pack(strings: list[str], prefix: str) -> Arrays:
    """Strings as two arrays (lengths, UTF-8 of them all joined): C-speed both ways."""
    joined = "".join(strings)
    lengths = np.fromiter(map(len, strings), dtype=np.int64, count=len(strings))
    return {f"{prefix}.len": lengths,
            f"{prefix}.utf8": np.frombuffer(joined.encode(), dtype=np.uint8)}


def _unpack(arrays: Arrays, prefix: str) -> list[str]:
    joined = arrays[f"{prefix}.utf8"].tobytes().decode()
    ends = np.cumsum(arrays[f"{prefix}.len"]).tolist()
    out, start = [], 0
    for end in ends:
        out.append(joined[start:end])
        start = end
    return out


def _dump_trails(prefix: str, state: _KindState) -> Arrays:
    """A kind's evidence trails as columns: the cells that have one and their lengths,
    then every entry's hour, source, event ids (flattened, with their counts) and
    snapshot (``None`` marked apart from ``""``)."""
    cells = [idx for idx in sorted(state.evidence) if state.evidence[idx].hours]
    trails = [state.evidence[idx] for idx in cells]
    hours: list[int] = []
    sources: list[str] = []
    id_lists: list[list[str]] = []
    snaps: list[str | None] = []
    for trail in trails:
        hours.extend(trail.hours)
        sources.extend(trail.sources)
        id_lists.extend(trail.ids)
        snaps.extend(trail.snaps)
    flat_ids = list(chain.from_iterable(id_lists))
    return {
        f"{prefix}trail.cells": np.array(cells, dtype=np.int64),
        f"{prefix}trail.count": np.fromiter((len(t.hours) for t in trails), dtype=np.int64,
                                            count=len(trails)),
        f"{prefix}trail.hours": np.array(hours, dtype=np.int64),
        f"{prefix}trail.ids_per": np.fromiter(map(len, id_lists), dtype=np.int64,
                                              count=len(id_lists)),
        f"{prefix}trail.snap_none": np.fromiter((x is None for x in snaps), dtype=bool,
                                                count=len(snaps)),
        **_pack(sources, f"{prefix}trail.sources"),
        **_pack(flat_ids, f"{prefix}trail.ids"),
        **_pack([x or "" for x in snaps], f"{prefix}trail.snaps"),
    }


def _restore_trails(prefix: str, state: _KindState, arrays: Arrays) -> None:
    counts = arrays[f"{prefix}trail.count"].tolist()
    hours = arrays[f"{prefix}trail.hours"].tolist()
    sources = _unpack(arrays, f"{prefix}trail.sources")
    flat_ids = _unpack(arrays, f"{prefix}trail.ids")
    snaps_text = _unpack(arrays, f"{prefix}trail.snaps")
    none = arrays[f"{prefix}trail.snap_none"].tolist()
    ids: list[list[str]] = []
    at = 0
    for n in arrays[f"{prefix}trail.ids_per"].tolist():
        ids.append(flat_ids[at:at + n])
        at += n
    snaps = [None if gone else text for gone, text in zip(none, snaps_text, strict=True)]
    at = 0
    for idx, n in zip(arrays[f"{prefix}trail.cells"].tolist(), counts, strict=True):
        trail = state.evidence[idx] = _Trail()
        chunk = hours[at:at + n]
        trail.hours.extend(chunk)
        trail.ordered = all(map(operator.le, chunk, chunk[1:]))
        trail.sources.extend(sources[at:at + n])
        trail.ids.extend(ids[at:at + n])
        trail.snaps.extend(snaps[at:at + n])
        at += n


def _trail_ref(engine: HotspotEngine, occ: Occurrence) -> list[Any] | None:
    """Where the trail holds this occurrence's event-id list (the same list object: dedup
    appends to it while the track lasts): ``[kind, cell index, position from the end]``.
    Open tracks are recent, so the search from the end is short."""
    state = engine._kinds.get(occ.kind)
    idx = engine._index.get(occ.cell_id)
    trail = None if state is None or idx is None else state.evidence.get(idx)
    if trail is None:
        return None
    for back, ids in enumerate(reversed(trail.ids)):
        if ids is occ.event_ids:
            return [occ.kind, idx, back]
    return None


def _dump_dedup(dedup: OccurrenceDeduper, engine: HotspotEngine) -> dict[str, Any]:
    recents: list[list[Any]] = []
    occurrences: list[list[Any]] = []
    recent_index: dict[int, int] = {}
    occurrence_index: dict[int, int] = {}

    def occurrence(occ: Occurrence) -> int:
        j = occurrence_index.get(id(occ))
        if j is None:
            j = occurrence_index[id(occ)] = len(occurrences)
            # the event ids: a reference into the trail that shares the list, or the list
            # itself where no trail holds it (dropped as too late, or not counted yet)
            ids = _trail_ref(engine, occ) or {"ids": list(occ.event_ids)}
            occurrences.append([occ.kind, occ.cell_id, occ.observed_at.isoformat(),
                                occ.station_id, occ.source_id, occ.lon, occ.lat,
                                occ.confidence, ids, occ.snapshot_url, occ.track_key])
        return j

    def ref(recent: _Recent) -> int:
        i = recent_index.get(id(recent))
        if i is None:
            i = recent_index[id(recent)] = len(recents)
            recents.append([occurrence(recent.occurrence), recent.last_ts])
        return i

    return {
        "ops": dedup._ops,
        "tracks": [[*key, ref(r)] for key, r in dedup._tracks.items()],
        "sources": [[*key, ref(r)] for key, r in dedup._sources.items()],
        "cells": [[*key, [ref(r) for r in window]] for key, window in dedup._cells.items()],
        "recents": recents,
        # the engine's far-ahead occurrences (hour, source key, occurrence, time): the
        # same objects as the deduper's, which appends what it absorbs into them
        "ahead": [[hour, *key, occurrence(occ), ts] for hour, key, occ, ts in engine._ahead],
        "occurrences": occurrences,
    }


def _restore_dedup(dedup: OccurrenceDeduper, saved: dict[str, Any],
                   engine: HotspotEngine) -> None:
    def event_ids(ref: Any) -> list[str]:
        if isinstance(ref, dict):
            return list(ref["ids"])
        kind, idx, back = ref
        ids: list[str] = engine._kinds[kind].evidence[idx].ids[-1 - back]
        return ids

    occurrences = [
        Occurrence(kind=o[0], cell_id=o[1], observed_at=datetime.fromisoformat(o[2]),
                   station_id=o[3], source_id=o[4], lon=o[5], lat=o[6], confidence=o[7],
                   event_ids=event_ids(o[8]), snapshot_url=o[9], track_key=o[10])
        for o in saved["occurrences"]]
    recents = [_Recent(occurrences[j], last_ts) for j, last_ts in saved["recents"]]
    dedup._ops = saved["ops"]
    dedup._tracks = {(a, b, c, d): recents[i] for a, b, c, d, i in saved["tracks"]}
    dedup._sources = {(a, b, c): recents[i] for a, b, c, i in saved["sources"]}
    dedup._cells = {(a, b): deque(recents[i] for i in window)
                    for a, b, window in saved["cells"]}
    engine._ahead = [(hour, (station, source), occurrences[j], ts)
                     for hour, station, source, j, ts in saved["ahead"]]
