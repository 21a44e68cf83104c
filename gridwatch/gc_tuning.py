"""The garbage collector's settings on GridWatch's hot paths.

With CPython's default thresholds (a young-generation pass every 700 allocations, a pass
over every tracked object every 100 of those) the collector walks the detections a
process holds (queued, in a reorder buffer, in open incidents) again and again. Measured:
~10 µs a message in the centre (``benchmarks/ingest_bench.py``, 48 → 38 µs) and
~90 µs a detection in a scale-out worker (``benchmarks/scaleout_bench.py``, one worker
354 → 260 µs; its pydantic validation took 15 µs a call instead of 5, most of it
collections that happened to start inside it).
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (10_000, 10, 10)


def tune_process() -> None:
    """For a process that runs a hot path until it exits (the MQTT child, a scale-out
    worker, a bridge): the objects start-up built (modules, config, grid) are frozen out
    of every later pass, and the young generation is collected every 10,000
    allocations."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
