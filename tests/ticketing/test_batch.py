"""Write-behind batching of the desk's writes, and what happens when an operator changes
a ticket while a batch is being applied."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from gridwatch.config import load_config
from gridwatch.embedded import EmbeddedPipeline
from stream.incidents import IncidentClusterer
from stream.types import IncidentEvent
from tests.builders import line, make_detection, make_grid
from tests.ticketing.builders import RULES, T0, make_full_ticket
from ticketing.batch import KEEP_BUDGET, BatchingStore, _copy
from ticketing.desk import TicketDesk
from ticketing.lifecycle import Action, ActionRequest
from ticketing.models import Origin, Ticket, TicketStatus
from ticketing.service import act, create_report
from ticketing.store import SqliteTicketStore, SqlTicketStore, TicketStore, VersionConflict


@pytest.fixture()
def setup(tmp_path):
    config = load_config()
    store = SqliteTicketStore(tmp_path / "t.sqlite3")
    batching = BatchingStore(store)
    grid = make_grid()
    desk = TicketDesk(policies=config.policies, settings=config.ticketing, grid=grid,
                      store=batching)
    direct = TicketDesk(policies=config.policies, settings=config.ticketing, grid=grid,
                        store=store)
    clusterer = IncidentClusterer()
    policy = config.policies.for_kind("smoke")

    def event(seconds: int, cell_lon: float = 0.5):
        d = make_detection(at=timedelta(seconds=seconds), lon=cell_lon)
        cell = grid.cell_at(d.lon, d.lat)
        return clusterer.add(d, cell.cell_id, policy)

    yield store, batching, desk, direct, event
    store.close()


def test_a_batch_writes_each_ticket_once_with_every_detection(setup, monkeypatch):
    store, batching, desk, _, event = setup
    calls = []
    original = store.save_many
    monkeypatch.setattr(store, "save_many", lambda items, **kw: (calls.append(len(items)),
                                                                 original(items, **kw)))
    with batching.batch():
        for s in range(0, 100, 5):
            desk.apply(event(s))
        desk.apply(event(0, cell_lon=1.5))  # another cell: a second ticket
        assert list(store.all()) == []  # nothing written before the batch ends
    assert calls == [2]
    tickets = {t.cell_id: t for t in store.all()}
    assert len(tickets["C00"].event_ids) == 20
    assert tickets["C00"].incident_count == 1
    assert store.ticket_for_incident(tickets["C00"].incident_ids[0]).ticket_id == \
        tickets["C00"].ticket_id


def test_outside_a_batch_writes_go_straight_through(setup):
    store, _, desk, _, event = setup
    desk.apply(event(0))
    assert len(list(store.all())) == 1


def test_an_operator_change_during_a_batch_rolls_it_back_and_is_kept(setup):
    store, batching, desk, direct, event = setup
    first = desk.apply(event(0))  # written through: the ticket exists
    assert first.status is TicketStatus.DISPATCHED
    joins = [event(10), event(20)]
    with pytest.raises(VersionConflict), batching.batch():
        for e in joins:
            desk.apply(e)
        act(store=store, rules=RULES, ticket_id=first.ticket_id,
            request=ActionRequest(action=Action.ACCEPT, note="on our way"),
            expected_version=1, actor="dept", at=first.opened_at + timedelta(minutes=1),
            visible=lambda t: True)
    stored = store.get(first.ticket_id)
    assert stored.status is TicketStatus.ACCEPTED
    assert len(stored.event_ids) == 1  # nothing of the batch was written
    for e in joins:  # what the embedded pipeline does next
        direct.apply(e)
    stored = store.get(first.ticket_id)
    assert stored.status is TicketStatus.ACCEPTED  # the operator's change survives
    assert len(stored.event_ids) == 3


# -- what is kept between batches -------------------------------------------------------------

class World:
    """A store, a batching desk and a direct desk over it, and detections made into
    incident events (smoke; cells by longitude: 0.5 → C00, 1.5 → C10, 2.5 → C20)."""

    def __init__(self, store: SqlTicketStore, *, keep_budget: int = KEEP_BUDGET) -> None:
        self.config = load_config()
        self.store = store
        self.grid = make_grid()
        self.batching = BatchingStore(store, keep_budget=keep_budget)
        self.desk = self.desk_over(self.batching)
        self.direct = self.desk_over(store)
        self.clusterer = IncidentClusterer()
        self.policy = self.config.policies.for_kind("smoke")

    def desk_over(self, store: TicketStore) -> TicketDesk:
        return TicketDesk(policies=self.config.policies, settings=self.config.ticketing,
                          grid=self.grid, store=store)

    def event(self, seconds: int, cell_lon: float = 0.5, *,
              event_id: str | None = None) -> IncidentEvent:
        extra = {} if event_id is None else {"event_id": event_id}
        d = make_detection(at=timedelta(seconds=seconds), lon=cell_lon, **extra)
        cell = self.grid.cell_at(d.lon, d.lat)
        return self.clusterer.add(d, cell.cell_id, self.policy)

    def apply(self, events: list[IncidentEvent]) -> bool:
        """What EmbeddedPipeline does: the batch, or one by one after a conflict.
        Returns whether the batch went through."""
        try:
            with self.batching.batch():
                for e in events:
                    self.desk.apply(e)
        except VersionConflict:
            for e in events:
                self.direct.apply(e)
            return False
        return True

    def act(self, ticket: Ticket, action: Action, *, minutes: int = 1,
            **request: str) -> Ticket:
        stored = self.store.get(ticket.ticket_id)
        assert stored is not None
        return act(store=self.store, rules=RULES, ticket_id=ticket.ticket_id,
                   request=ActionRequest(action=action, **request),
                   expected_version=stored.version, actor="op",
                   at=stored.updated_at + timedelta(minutes=minutes),
                   visible=lambda t: True)

    def only(self, cell_id: str, *, status: TicketStatus | None = None) -> Ticket:
        [ticket] = [t for t in self.store.all() if t.cell_id == cell_id
                    and (status is None or t.status is status)]
        return ticket


@pytest.fixture()
def world(store: SqlTicketStore) -> World:
    return World(store)


def _count_reads(store: SqlTicketStore, monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count the store's reads of tickets from now on."""
    reads: Counter[str] = Counter()

    def counting(name: str) -> Any:
        read = getattr(store, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            reads[name] += 1
            return read(*args, **kwargs)

        return counted

    for name in ("get", "open_ticket_for", "ticket_for_incident"):
        monkeypatch.setattr(store, name, counting(name))
    return reads


def test_a_ticket_written_by_one_batch_is_not_read_again_by_the_next(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    assert world.apply([world.event(s) for s in range(0, 50, 5)])
    reads = _count_reads(world.store, monkeypatch)
    assert world.apply([world.event(s) for s in range(50, 100, 5)])
    assert world.apply([world.event(10_000)])  # a new incident: the kept open ticket
    assert reads == Counter()
    ticket = world.only("C00")
    assert len(ticket.event_ids) == 21 and ticket.incident_count == 2
    assert ticket.version == 21


def test_an_operator_closing_a_kept_ticket_makes_the_next_batch_conflict(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept ticket is still open in the batching store's memory; the store has it
    dismissed at a newer version, so the write that relies on it is refused whole."""
    assert world.apply([world.event(0), world.event(10)])
    first = world.only("C00")
    world.act(first, Action.DISMISS, reason="false alarm")
    save_many = world.store.save_many
    outcomes: list[str] = []

    def recorded(items: Any, **kwargs: Any) -> Any:
        try:
            return save_many(items, **kwargs)
        except VersionConflict as exc:
            outcomes.append(f"{exc.ticket_id} {exc.expected}->{exc.current}")
            raise

    monkeypatch.setattr(world.store, "save_many", recorded)
    # a new incident in the cell: the kept "open ticket of (C00, smoke)" is stale; two
    # detections take the batch's copy to version 4, past the store's 3, so only the
    # version it was kept at (2) shows the conflict
    late = [world.event(10_000), world.event(10_010)]
    with pytest.raises(VersionConflict), world.batching.batch():
        for e in late:
            world.desk.apply(e)
    assert outcomes == [f"{first.ticket_id} 2->3"]
    stored = world.store.get(first.ticket_id)
    assert stored is not None and stored.status is TicketStatus.DISMISSED
    assert len(stored.event_ids) == 2  # nothing of the batch was written
    for e in late:  # what the embedded pipeline does next
        world.direct.apply(e)
    opened = world.only("C00", status=TicketStatus.DISPATCHED)
    assert opened.ticket_id != first.ticket_id
    assert opened.event_ids == [e.new_event_ids[0] for e in late]
    # what was kept is gone: the next batch reads the store and joins the new ticket
    reads = _count_reads(world.store, monkeypatch)
    assert world.apply([joining := world.event(10_020)])
    assert reads["ticket_for_incident"] == 1
    assert world.only("C00", status=TicketStatus.DISPATCHED).event_ids == \
        opened.event_ids + list(joining.new_event_ids)
    assert len(world.only("C00", status=TicketStatus.DISMISSED).event_ids) == 2


def test_a_merge_between_batches_sends_the_incident_to_the_target(world: World) -> None:
    assert world.apply([world.event(0), world.event(0, cell_lon=1.5)])
    source, target = world.only("C00"), world.only("C10")
    world.act(source, Action.MERGE, into=target.ticket_id)
    # the incident of C00 is linked to the target now; the kept link says the source
    assert not world.apply([joining := world.event(10)])
    merged = world.store.get(source.ticket_id)
    assert merged is not None and merged.status is TicketStatus.CLOSED
    assert merged.event_ids == source.event_ids  # untouched
    assert world.store.get(target.ticket_id).event_ids[-1] == \
        joining.new_event_ids[0]  # type: ignore[union-attr]


def test_a_ticket_opened_through_the_api_between_batches_takes_the_new_incidents(
        world: World) -> None:
    """What open_ticket_for gives (the latest opened ticket of the cell and kind) is
    checked when the batch relies on the kept answer instead of asking."""
    assert world.apply([world.event(0)])
    desk_ticket = world.only("C00")
    report, created = create_report(
        store=world.store, grid=world.grid, policies=world.config.policies,
        settings=world.config.ticketing, kind="smoke", lon=0.5, lat=0.5,
        at=T0 + timedelta(minutes=5), actor="citizen", origin=Origin.API,
        external_id="r1")
    assert created
    assert world.store.open_ticket_for("C00", "smoke").ticket_id == report.ticket_id  # type: ignore[union-attr]
    assert not world.apply([new := world.event(10_000)])
    assert world.store.get(report.ticket_id).event_ids == list(new.new_event_ids)  # type: ignore[union-attr]
    assert world.store.get(desk_ticket.ticket_id).event_ids == \
        desk_ticket.event_ids  # type: ignore[union-attr]


def test_another_replica_writing_a_kept_ticket_makes_the_next_batch_conflict(
        world: World, store_factory: Any) -> None:
    assert world.apply([world.event(0, event_id="a0")])
    other = World(store_factory())  # a second process on the same database
    other.clusterer = world.clusterer  # the same incidents (one partition, handed over)
    assert other.apply([world.event(5, event_id="b5")])
    assert not world.apply([world.event(10, event_id="a10")])
    assert not other.apply([world.event(15, event_id="b15")])  # what it kept is stale too
    ticket = world.only("C00")
    assert sorted(ticket.event_ids) == ["a0", "a10", "b15", "b5"]
    assert ticket.detection_count == 4 and ticket.version == 4


def test_a_failed_batch_forgets_what_was_kept(world: World,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert world.apply([world.event(0)])
    save_many = world.store.save_many

    def failing(items: Any, **kwargs: Any) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(world.store, "save_many", failing)
    with pytest.raises(OSError), world.batching.batch():
        world.desk.apply(world.event(10))
    monkeypatch.setattr(world.store, "save_many", save_many)
    reads = _count_reads(world.store, monkeypatch)
    assert world.apply([world.event(20)])
    assert reads["ticket_for_incident"] == 1
    assert len(world.only("C00").event_ids) == 2  # the failed batch's detection is not in


def test_changing_a_ticket_after_its_batch_does_not_reach_the_next(world: World) -> None:
    with world.batching.batch():
        returned = world.desk.apply(world.event(0))
    returned.event_ids.append("not-a-detection")  # a caller or listener changing it
    returned.status = TicketStatus.CLOSED
    with world.batching.batch():
        read = world.batching.get(returned.ticket_id)
        assert read is not None and read.status is TicketStatus.DISPATCHED
        assert len(read.event_ids) == 1
        read.event_ids.append("changed-not-saved")  # taken from what was kept, not saved
    assert world.apply([world.event(10)])
    ticket = world.only("C00")
    assert ticket.status is TicketStatus.DISPATCHED and len(ticket.event_ids) == 2
    assert "not-a-detection" not in ticket.event_ids
    assert "changed-not-saved" not in ticket.event_ids


def test_a_write_outside_a_batch_forgets_what_was_kept(world: World) -> None:
    assert world.apply([world.event(0)])
    world.desk.apply(world.event(10))  # written through: the kept version is stale now
    assert world.apply([world.event(20)])  # no conflict: it was read again
    assert len(world.only("C00").event_ids) == 3


@pytest.mark.parametrize("keep_budget", [KEEP_BUDGET, 30, 0])
def test_keeping_tickets_between_batches_writes_what_reading_them_writes(
        tmp_path: Path, keep_budget: int) -> None:
    """The same detections and operator actions, batched over a store that keeps
    tickets between batches (fully, with a small budget that drops some, or not at all),
    give the tickets and audit logs that reading them afresh every batch gives.

    Batches of 30 detections, 10 per cell (C00, C10, C20), 60 s apart per cell; the
    first detection of each cell in batches 2, 4, 6 and 8 starts a new incident. Each
    operator change follows a batch that kept its tickets, so the next batch relies on
    what the change made stale."""
    results = []
    for name, budget in (("kept", keep_budget), ("read", 0)):
        w = World(SqliteTicketStore(tmp_path / f"{name}.sqlite3"), keep_budget=budget)
        conflicts = 0
        for b in range(10):
            events = [w.event(i * 20 + (i // 60) * 1_000, cell_lon=0.5 + i % 3,
                              event_id=f"d{i}") for i in range(b * 30, (b + 1) * 30)]
            conflicts += not w.apply(events)
            if b == 0:
                w.act(w.only("C00"), Action.ACCEPT)
            elif b == 2:  # the kept ticket of C10's incident is no longer open
                w.act(w.only("C10"), Action.DISMISS, reason="false alarm")
            elif b == 5:  # a later-opened ticket in C10 takes its next incidents
                create_report(store=w.store, grid=w.grid, policies=w.config.policies,
                              settings=w.config.ticketing, kind="smoke", lon=1.5, lat=0.5,
                              at=T0 + timedelta(minutes=90), actor="citizen",
                              origin=Origin.API, external_id="r1")
            elif b == 8:  # C20's incident is moved to C00's ticket
                w.act(w.only("C20"), Action.MERGE, into=w.only("C00").ticket_id)
        results.append(([t.to_public() for t in w.store.all()],
                         [[(e.action, e.from_status, e.to_status) for e in
                           w.store.audit(t.ticket_id)] for t in w.store.all()], conflicts))
        w.store.close()
    (kept, kept_audit, kept_conflicts), (read, read_audit, _) = results
    assert kept == read
    assert kept_audit == read_audit
    assert sum(len(t["event_ids"]) for t in kept) >= 300
    assert [len(t["event_ids"]) for t in kept if t["origin"] == "api"] == [40]
    if keep_budget == KEEP_BUDGET:
        assert kept_conflicts == 4  # each change is met by the batch after it


def test_the_embedded_pipeline_opens_a_new_ticket_after_an_operator_closed_the_kept_one(
        store: SqlTicketStore) -> None:
    pipeline = EmbeddedPipeline(load_config(), make_grid(), store)
    try:
        for i in range(3):
            pipeline.submit_raw(line(event_id=f"a{i}", observed_at=(
                T0 + timedelta(seconds=10 * i)).isoformat()), origin="test")
        assert pipeline.drain()
        [first] = list(store.all())
        act(store=store, rules=RULES, ticket_id=first.ticket_id,
            request=ActionRequest(action=Action.DISMISS, reason="drill"),
            expected_version=first.version, actor="op",
            at=T0 + timedelta(minutes=5), visible=lambda t: True)
        for i in range(2):  # a new incident in the same cell, one batch
            pipeline.submit_raw(line(event_id=f"b{i}", observed_at=(
                T0 + timedelta(hours=2, seconds=10 * i)).isoformat()), origin="test")
        assert pipeline.drain()
        assert pipeline.stats()["failed"] == 0
    finally:
        pipeline.close()
    dismissed, opened = list(store.all())
    assert dismissed.ticket_id == first.ticket_id and dismissed.event_ids == ["a0", "a1", "a2"]
    assert dismissed.status is TicketStatus.DISMISSED
    assert opened.event_ids == ["b0", "b1"] and opened.status is TicketStatus.DISPATCHED


def test_a_kept_copy_has_every_field_and_nothing_shared() -> None:
    ticket = make_full_ticket()
    kept = _copy(ticket)
    assert kept == ticket and kept is not ticket
    for key in ("event_ids", "incident_ids", "source_ids", "snapshot_urls", "hotspot"):
        assert getattr(kept, key) is not getattr(ticket, key)
    assert kept.hotspot is not None and ticket.hotspot is not None
    assert kept.hotspot["top_sources"] is not ticket.hotspot["top_sources"]
    kept.event_ids.append("e3")
    kept.hotspot["top_sources"].append({"source": "b"})
    assert ticket.event_ids == ["e1", "e2"]
    assert ticket.hotspot["top_sources"] == [{"source": "a"}]


def test_a_batchs_new_incidents_are_looked_up_in_one_read(setup, monkeypatch):
    """prefetch_incidents: one IN read for the batch; an incident the store links to a
    ticket (re-opened after a restart) is still found and read."""
    store, batching, desk, _, event = setup
    first = event(0)
    desk.apply(first)  # written through: linked in the store
    batching.forget()
    reads: list[str] = []
    original = store.ticket_for_incident
    monkeypatch.setattr(store, "ticket_for_incident",
                        lambda incident_id: (reads.append(incident_id), original(incident_id))[1])
    asked: list[list[str]] = []
    linked = store.linked_incidents
    monkeypatch.setattr(store, "linked_incidents",
                        lambda ids: (asked.append(list(ids)), linked(ids))[1])
    fresh = [event(3600 * h, cell_lon=1.5) for h in range(1, 4)]  # three new incidents
    ids = [first.incident.incident_id] + [e.incident.incident_id for e in fresh]
    with batching.batch():
        batching.prefetch_incidents(ids)
        found = {i: batching.ticket_for_incident(i) for i in ids}
    assert asked == [ids]
    assert reads == [first.incident.incident_id]  # only the linked one is read
    assert found[first.incident.incident_id] is not None
    assert [found[e.incident.incident_id] for e in fresh] == [None, None, None]
    with pytest.raises(RuntimeError, match="batch"):
        batching.prefetch_incidents(ids)
