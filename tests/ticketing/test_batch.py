"""Write-behind batching of the desk's writes, and what happens when an operator changes
a ticket while a batch is being applied."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gridwatch.config import load_config
from stream.incidents import IncidentClusterer
from tests.builders import make_detection, make_grid
from ticketing.batch import BatchingStore
from ticketing.desk import TicketDesk
from ticketing.lifecycle import Action, ActionRequest
from ticketing.models import TicketStatus
from ticketing.service import act
from ticketing.store import SqliteTicketStore, VersionConflict


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
        act(store=store, ticket_id=first.ticket_id,
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
