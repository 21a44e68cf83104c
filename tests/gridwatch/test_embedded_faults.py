"""Issue 12 parts 2-4 on the embedded pipeline, against real SQLite and PostgreSQL:
one poison detection never takes its batch down, bad clocks are dead-lettered before
they reach the stream core, and a restart remembers every event id of the horizon."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from gridwatch.config import load_config
from gridwatch.embedded import EmbeddedPipeline
from tests.builders import make_detection, make_grid
from tests.ticketing.builders import RULES, refuse_poison
from ticketing.lifecycle import Action, ActionRequest
from ticketing.models import TicketStatus
from ticketing.service import act
from ticketing.store import SqliteTicketStore, SqlTicketStore


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest) -> Iterator[object]:
    """Opens stores on one database per test (a second store: a restarted process)."""
    opened: list[SqlTicketStore] = []

    def factory() -> SqlTicketStore:
        if request.param == "sqlite":
            store: SqlTicketStore = SqliteTicketStore(
                request.getfixturevalue("tmp_path") / "tickets.db")
        else:
            url, schema = request.getfixturevalue("pg_schema")
            store = SqlTicketStore(url, schema=schema, pool_size=4)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


class Watch:
    """Callbacks for submissions, recording what happened to each event id."""

    def __init__(self) -> None:
        self.events: dict[str, list[str]] = {}

    def item(self, detection):  # type: ignore[no-untyped-def]
        log = self.events.setdefault(detection.event_id, [])
        return (detection, lambda: log.append("committed"), lambda: log.append("failed"),
                lambda code, reason: log.append(f"{code}: {reason}"))


# -- part 2: poison isolation ---------------------------------------------------------------
@pytest.mark.parametrize("poison_at", [0, 5, 10])
def test_one_refused_detection_does_not_take_its_batch_down(store_factory, poison_at):
    store = store_factory()
    refuse_poison(store)
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store)
    # ten smoke alarms in nine cells (one incident each, one ticket each) and one poison
    smoke = [make_detection(event_id=f"smoke-{i}", at=timedelta(seconds=i),
                            lon=0.5 + i % 3, lat=0.5 + (i // 3) % 3) for i in range(10)]
    poison = make_detection(event_id="poison-1", at=timedelta(seconds=3), lon=0.5, lat=0.5)
    batch = [*smoke[:poison_at], poison, *smoke[poison_at:]]
    watch = Watch()
    results = pipeline.submit_many([watch.item(d) for d in batch])
    assert all(r.accepted for r in results)
    assert pipeline.drain()
    for detection in smoke:
        assert watch.events[detection.event_id] == ["committed"]
    [refused] = watch.events["poison-1"]
    assert refused.startswith("store_refused: the ticket store refused it")
    assert "IntegrityError" in refused
    held = sorted(e for t in store.all() for e in t.event_ids)
    assert held == sorted(d.event_id for d in smoke)
    stats = pipeline.stats()
    assert stats["processed"] == 10 and stats["failed"] == 0
    assert stats["refused_by_code"] == {"store_refused": 1}
    assert stats["tickets_opened"] == len(list(store.all()))
    # a re-sent copy of the refused one is a duplicate (it was dead-lettered), not a retry
    again = pipeline.submit_many([watch.item(poison)])
    assert again[0].duplicate
    pipeline.close()


def test_a_refused_detection_joining_an_incident_leaves_the_incident_ticketed(
        store_factory):
    store = store_factory()
    refuse_poison(store)
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store)
    batch = [make_detection(event_id="poison-first", at=timedelta(seconds=0)),
             *(make_detection(event_id=f"after-{i}", at=timedelta(seconds=10 + i))
               for i in range(3))]
    watch = Watch()
    pipeline.submit_many([watch.item(d) for d in batch])
    assert pipeline.drain()
    [ticket] = store.all()
    assert ticket.event_ids == ["after-0", "after-1", "after-2"]
    assert watch.events["poison-first"][0].startswith("store_refused")
    pipeline.close()


# -- part 3: sane clocks ----------------------------------------------------------------------
NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("observed_at", "refused"), [
    (NOW + timedelta(seconds=299), False),
    (NOW + timedelta(seconds=301), True),  # stream.max_future_s: 300
    (datetime(8999, 1, 1, tzinfo=UTC), True),
    (NOW - timedelta(days=1, hours=23), False),
    (NOW - timedelta(days=2, seconds=1), True),  # stream.max_age_s: dedup_horizon_s (2 d)
    (datetime(1970, 1, 1, tzinfo=UTC), True),
])
def test_a_bad_clock_is_dead_lettered_as_clock_skew(tmp_path, observed_at, refused):
    store = SqliteTicketStore(tmp_path / "t.db")
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store, received=lambda: NOW,
                                skew_clock=lambda: NOW)
    result = pipeline.submit(make_detection(event_id="d1", at=observed_at,
                                            station_id="st9", source_id="smoke-7"))
    assert pipeline.drain()
    assert result.accepted is not refused
    stats = pipeline.stats()
    if refused:
        assert result.code == "clock_skew"
        assert "max_future_s" in (result.reason or "") or \
            "max_age_s" in (result.reason or "")
        assert stats["clock_skew_by_source"] == {"st9/smoke-7": 1}
        assert stats["rejected_by_reason"] == {"clock_skew": 1}
        assert list(store.all()) == []
    else:
        assert stats["clock_skew_by_source"] == {}
        assert [t.event_ids for t in store.all()] == [["d1"]]
    pipeline.close()


def test_bad_clocks_cannot_move_a_live_tickets_opened_or_due_at(store_factory):
    store = store_factory()
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store, received=lambda: NOW,
                                skew_clock=lambda: NOW)
    pipeline.submit(make_detection(event_id="live", at=NOW - timedelta(seconds=30)))
    assert pipeline.drain()
    [before] = store.all()
    for i, at in enumerate([datetime(1970, 1, 1, tzinfo=UTC),
                            datetime(8000, 1, 1, tzinfo=UTC)]):
        assert pipeline.submit(make_detection(event_id=f"bad-{i}", at=at)).code == \
            "clock_skew"
    # the event-id filter still knows the live id (a year-8000 clock did not expire it)
    assert pipeline.submit(make_detection(event_id="live", at=NOW)).duplicate
    assert pipeline.drain()
    [after] = store.all()
    assert (after.opened_at, after.due_at, after.event_ids) == \
        (before.opened_at, before.due_at, ["live"])
    assert after.escalation == before.escalation
    pipeline.close()


def test_replay_style_pipelines_do_not_check_clocks(tmp_path):
    # no skew clock (the demo plays a file as if live; replay uses the file's time)
    store = SqliteTicketStore(tmp_path / "t.db")
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store, received=None)
    assert pipeline.submit(make_detection(at=datetime(1999, 1, 1, tzinfo=UTC))).accepted
    pipeline.close()


def test_max_age_beyond_the_dedup_horizon_is_refused_with_the_reason():
    from stream.policy import StreamSettings

    with pytest.raises(ValueError, match="expected max_age_s <= dedup_horizon_s"):
        StreamSettings(dedup_horizon_s=3600, max_age_s=7200)
    assert StreamSettings(dedup_horizon_s=3600).age_limit_s == 3600


# -- part 4: restart remembers ----------------------------------------------------------------
def test_a_restart_remembers_every_event_id_of_the_horizon(store_factory):
    """Hundreds of tickets and incidents over four days: the restarted pipeline knows
    every id observed within dedup_horizon_s (2 days) of the newest, so each re-sent
    one is a duplicate, and the tickets do not grow."""
    store = store_factory()
    config = load_config()
    first = EmbeddedPipeline(config, make_grid(), store, received=None)
    detections = []
    for i in range(300):
        # a new incident every ~19 min over 4 days, across the nine cells, 2 ids each
        at = timedelta(minutes=19 * i)
        cell = (0.5 + i % 3, 0.5 + (i // 3) % 3)
        for k in range(2):
            detections.append(make_detection(event_id=f"d{i}-{k}", at=at + timedelta(
                seconds=k), lon=cell[0], lat=cell[1]))
    first.submit_many([(d, None, None) for d in detections])
    assert first.drain(60)
    # an operator closes some tickets meanwhile (a re-sent id into them is still absorbed)
    for ticket in list(store.all())[::3]:
        act(store=store, rules=RULES, ticket_id=ticket.ticket_id,
            request=ActionRequest(action=Action.DISMISS, reason="drill"),
            expected_version=ticket.version, actor="op", at=NOW, visible=lambda t: True)
    assert any(t.status is TicketStatus.DISMISSED for t in store.all())
    before = {t.ticket_id: (t.event_ids, t.detection_count, t.version) for t in store.all()}
    first.close()

    newest = max(d.observed_at for d in detections)
    inside = [d for d in detections
              if (newest - d.observed_at).total_seconds() <= config.stream.dedup_horizon_s]
    assert 200 < len(inside) < len(detections)
    restarted = EmbeddedPipeline(config, make_grid(), store_factory(), received=None)
    results = restarted.submit_many([(d, None, None) for d in inside])
    assert all(r.duplicate for r in results)
    assert restarted.drain(60)
    after = {t.ticket_id: (t.event_ids, t.detection_count, t.version) for t in store.all()}
    assert after == before
    restarted.close()


def test_a_resent_first_detection_into_a_closed_ticket_is_absorbed(store_factory):
    """The centre forgot the id (past the dedup horizon of the newest id), the operator
    closed its ticket, and the edge re-sends it: the re-opened incident derives the
    closed ticket's id again; it must be absorbed, not a version conflict."""
    store = store_factory()
    first = EmbeddedPipeline(load_config(), make_grid(), store, received=None)
    first.submit_many([(make_detection(event_id=f"old-{k}", at=timedelta(seconds=k)), None,
                        None) for k in range(2)])
    assert first.drain()
    [closed] = store.all()
    act(store=store, rules=RULES, ticket_id=closed.ticket_id,
        request=ActionRequest(action=Action.DISMISS, reason="drill"),
        expected_version=closed.version, actor="op", at=NOW, visible=lambda t: True)
    # three days later, elsewhere: the old ids fall out of the horizon
    first.submit(make_detection(event_id="new", at=timedelta(days=3), lon=2.5, lat=2.5))
    assert first.drain()
    first.close()
    [closed] = [t for t in store.all() if t.ticket_id == closed.ticket_id]

    restarted = EmbeddedPipeline(load_config(), make_grid(), store_factory(), received=None)
    watch = Watch()
    results = restarted.submit_many([watch.item(make_detection(
        event_id=f"old-{k}", at=timedelta(seconds=k))) for k in range(2)])
    assert not any(r.duplicate for r in results)  # forgotten, as the issue measured
    assert restarted.drain()
    assert watch.events == {"old-0": ["committed"], "old-1": ["committed"]}
    stats = restarted.stats()
    assert stats["refused_by_code"] == {} and stats["failed"] == 0
    [again] = [t for t in store.all() if t.ticket_id == closed.ticket_id]
    assert (again.event_ids, again.detection_count, again.version, again.status) == \
        (closed.event_ids, closed.detection_count, closed.version, closed.status)
    assert len(list(store.all())) == 2
    restarted.close()


def test_one_far_future_id_in_the_store_does_not_shrink_the_seeding(store_factory):
    """A year-8000 detection written before clocks were checked (or by a runtime without
    the check) made the seeding keep only the horizon before *it*: 1 id instead of all."""
    store = store_factory()
    first = EmbeddedPipeline(load_config(), make_grid(), store, received=None)
    recent = [make_detection(event_id=f"r{i}", at=NOW - timedelta(minutes=i),
                             lon=0.5 + i % 3) for i in range(50)]
    first.submit_many([(d, None, None) for d in recent])
    first.submit(make_detection(event_id="far", at=datetime(8000, 1, 1, tzinfo=UTC),
                                lon=2.5, lat=2.5))
    assert first.drain()
    first.close()
    restarted = EmbeddedPipeline(load_config(), make_grid(), store_factory(),
                                 received=lambda: NOW, skew_clock=lambda: NOW)
    results = restarted.submit_many([(d, None, None) for d in recent])
    assert all(r.duplicate for r in results)
    restarted.close()


def test_serve_metrics_show_clock_skew_per_source_and_store_refusals(tmp_path):
    from prometheus_client import CollectorRegistry, generate_latest

    from gridwatch.commands.serve import PipelineCollector

    store = SqliteTicketStore(tmp_path / "t.db")
    refuse_poison(store)
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store, received=lambda: NOW,
                                skew_clock=lambda: NOW)
    pipeline.submit(make_detection(event_id="bad", at=datetime(1970, 1, 1, tzinfo=UTC),
                                   station_id="st9", source_id="smoke-7"))
    pipeline.submit(make_detection(event_id="poison-x", at=NOW))
    assert pipeline.drain()
    registry = CollectorRegistry()
    registry.register(PipelineCollector(pipeline))  # type: ignore[arg-type]
    text = generate_latest(registry).decode()
    pipeline.close()
    assert 'gridwatch_pipeline_clock_skew_total{source="smoke-7",station="st9"} 1.0' in text
    assert 'gridwatch_pipeline_refused_total{code="store_refused"} 1.0' in text


def test_a_refused_hot_spot_journal_write_refuses_no_detection(tmp_path):
    """The durable state's own write failing for good is not blamed on an output: the
    smoke alarms of the batch are written, none dead-lettered; the batch is reported
    failed (not acknowledged), and the re-delivery is absorbed by the tickets."""
    store = SqliteTicketStore(tmp_path / "t.db")
    with store.engine.begin() as conn:
        conn.execute(text("CREATE TRIGGER refuse_journal BEFORE INSERT ON stream_journal"
                          " BEGIN SELECT RAISE(ABORT, 'journal refused by the test'); END"))
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store, received=None)
    batch = [make_detection(event_id=f"smoke-{i}", at=timedelta(seconds=i),
                            lon=0.5 + i % 3) for i in range(3)]
    batch.append(make_detection(event_id="rider-1", at=timedelta(seconds=5),
                                kind="helmetless_rider", source_type="camera"))
    watch = Watch()
    pipeline.submit_many([watch.item(d) for d in batch])
    assert pipeline.drain()
    assert all(events == ["failed"] for events in watch.events.values()), watch.events
    assert pipeline.stats()["refused_by_code"] == {}
    assert sorted(e for t in store.all() for e in t.event_ids) == \
        ["smoke-0", "smoke-1", "smoke-2"]
    pipeline.close()


@pytest.mark.parametrize("shared_store", [True, False])
def test_a_replica_does_not_put_an_id_another_replica_committed_on_a_second_ticket(
        store_factory, shared_store):
    """Two centre replicas on one store (``serve --mqtt-share-group``), started together
    (so neither's event-id filter is seeded with the other's work). Replica A commits y
    then x into one ticket, which an operator then dismisses; the edge re-sends x and the
    broker gives it to replica B. B's incident opens afresh from x, and nothing B knows
    holds x; only a check against the whole store keeps x off a second ticket."""
    store = store_factory()
    a = EmbeddedPipeline(load_config(), make_grid(), store, received=None,
                         shared_store=True)
    b = EmbeddedPipeline(load_config(), make_grid(), store_factory(), received=None,
                         shared_store=shared_store)
    a.submit_many([(make_detection(event_id=e, at=timedelta(seconds=k)), None, None)
                   for k, e in enumerate(["y", "x"])])
    assert a.drain()
    [first] = store.all()
    assert first.event_ids == ["y", "x"]
    act(store=store, rules=RULES, ticket_id=first.ticket_id,
        request=ActionRequest(action=Action.DISMISS, reason="drill"),
        expected_version=first.version, actor="op", at=NOW, visible=lambda t: True)

    watch = Watch()
    b.submit_many([watch.item(make_detection(event_id="x", at=timedelta(seconds=1)))])
    assert b.drain()
    assert watch.events == {"x": ["committed"]}  # receipted: it is on a ticket
    holding = [t.ticket_id for t in store.all() if "x" in t.event_ids]
    if shared_store:
        assert holding == [first.ticket_id]
    else:  # what the check prevents: the same detection on two tickets
        assert len(holding) == 2
    a.close()
    b.close()
