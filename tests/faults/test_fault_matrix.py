"""The CI subset of the fault-injection matrix (issue 12 part 7; the full matrix is
``benchmarks/fault_matrix.py``, its figures in docs/faults.md): real Mosquitto, real
``gridwatch serve`` over SQLite and PostgreSQL, a real edge agent in a child process.
Whatever is killed, every detection accepted at the edge is committed or dead-lettered,
exactly once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.faults import CASES, Case, run_case

CI_CASES = [
    ("broker SIGKILL, centre offline", "sqlite"),  # the 1,501 lost of issue 12
    ("broker SIGKILL mid-stream, persistence off", "sqlite"),
    ("edge kill -9 (twice)", "sqlite"),
    ("centre kill -9 draining a backlog", "postgres"),
    ("poison + far-future + ancient clocks", "sqlite"),
]


def _case(name: str, store: str) -> Case:
    [case] = [c for c in CASES if c.name == name and c.store == store]
    return case


@pytest.mark.parametrize(("name", "store"), CI_CASES, ids=[f"{n} [{s}]" for n, s in CI_CASES])
def test_nothing_accepted_is_lost_or_duplicated(tmp_path: Path, name: str, store: str,
                                                postgres_url: str) -> None:
    case = _case(name, store)
    outcome = run_case(case, tmp_path, count=300, rate=200, postgres_url=postgres_url,
                       drain_timeout_s=60)
    assert outcome.accepted == (270 if case.poison else 300), outcome
    assert (outcome.lost, outcome.duplicated) == (0, 0), outcome
    assert outcome.committed + outcome.deadlettered == outcome.accepted, outcome
    if case.poison:  # every 10th store_refused, every 10th 1970 (clock_skew)
        assert (outcome.deadlettered, outcome.refused_at_edge) == (60, 30), outcome
    if "broker SIGKILL, centre offline" in name:
        # the broker lost what it had acknowledged: only the edge's re-sends brought it
        assert outcome.resent >= outcome.accepted, outcome
