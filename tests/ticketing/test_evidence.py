"""The centre's evidence store and ``GET /evidence/...`` (SQLite and PostgreSQL): what is
kept, what is refused, the budget and retention, and who may look."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.builders import make_grid
from tests.ticketing.builders import T0, TOKENS, make_auth, make_policies, make_ticket
from ticketing.api.app import create_app
from ticketing.evidence import (
    MIB,
    DirectoryBlobStore,
    EvidenceRejected,
    EvidenceSettings,
    EvidenceStore,
    blob_key,
    evidence_path,
)
from ticketing.store import SqlTicketStore

JPEG = b"\xff\xd8\xff\xe0" + b"jpeg body" * 10
PNG = b"\x89PNG\r\n\x1a\n" + b"png body" * 10


def image(n_bytes: int) -> bytes:
    """A JPEG-looking image of exactly ``n_bytes``."""
    return (b"\xff\xd8\xff" + b"x" * n_bytes)[:n_bytes]


def put(store: EvidenceStore, event_id: str, data: bytes = JPEG, *,
        content_type: str = "image/jpeg", hours: float = 0) -> bool:
    return store.put(event_id=event_id, station_id="st1", source_id="cam-1",
                     content_type=content_type, image=data, now=T0 + timedelta(hours=hours))


@pytest.fixture
def evidence(store: SqlTicketStore, tmp_path: Path) -> EvidenceStore:
    return EvidenceStore(store, DirectoryBlobStore(tmp_path / "evidence"))


def test_an_image_is_stored_once_under_its_event_id(evidence: EvidenceStore,
                                                    tmp_path: Path) -> None:
    assert put(evidence, "st1:cam-1:e/1", PNG, content_type="image/png") is True
    assert put(evidence, "st1:cam-1:e/1", JPEG) is False  # a re-send: the first copy stays
    item = evidence.get("st1:cam-1:e/1")
    assert item is not None
    assert (item.content_type, item.size_bytes, item.station_id, item.source_id,
            item.stored_at) == ("image/png", len(PNG), "st1", "cam-1", T0)
    assert evidence.read("st1:cam-1:e/1") == PNG
    key = blob_key("st1:cam-1:e/1")
    assert (tmp_path / "evidence" / key[:2] / key).read_bytes() == PNG  # a safe file name
    assert evidence.stats() | {"rejected_by_code": None} == {
        "stored": 1, "duplicates": 1, "rejected_by_code": None, "evicted_by_reason": {},
        "bytes": len(PNG)}
    assert evidence.get("nope") is None and evidence.read("nope") is None


@pytest.mark.parametrize(("data", "content_type", "code", "message"), [
    (b"GIF89a....", "image/gif", "not_an_image", "expected one of ['image/jpeg', 'image/png']"),
    (b"<html>hi</html>", "image/jpeg", "not_an_image", "none of them"),
    (PNG, "image/jpeg", "content_type_mismatch", "declared 'image/jpeg' but the bytes are "
                                                 "image/png"),
    (image(2048 + 1), "image/jpeg", "too_large", "at most 2048 bytes"),
])
def test_bad_images_are_refused_with_a_reason_and_counted(
        store: SqlTicketStore, tmp_path: Path, data: bytes, content_type: str, code: str,
        message: str) -> None:
    evidence = EvidenceStore(store, DirectoryBlobStore(tmp_path / "ev"),
                             EvidenceSettings(max_item_bytes=2048))
    with pytest.raises(EvidenceRejected, match=re.escape(message)) as caught:
        put(evidence, "e1", data, content_type=content_type)
    assert caught.value.code == code
    assert evidence.get("e1") is None and evidence.read("e1") is None
    assert evidence.stats()["rejected_by_code"] == {code: 1}


def test_the_budget_removes_the_oldest_first(store: SqlTicketStore, tmp_path: Path) -> None:
    evidence = EvidenceStore(store, DirectoryBlobStore(tmp_path / "ev"),
                             EvidenceSettings(max_bytes=MIB, max_item_bytes=800 * 1024))
    for i in range(3):  # 3 x 300 KiB fit in 1 MiB
        put(evidence, f"e{i}", image(300 * 1024), hours=i)
    assert [evidence.get(f"e{i}") is not None for i in range(3)] == [True] * 3
    put(evidence, "e3", image(300 * 1024), hours=3)  # 1200 KiB: the oldest goes
    assert [evidence.get(f"e{i}") is not None for i in range(4)] == [False, True, True, True]
    assert evidence.read("e0") is None  # its file too
    put(evidence, "e4", image(700 * 1024), hours=4)  # 1600 KiB: the next two oldest go
    assert [evidence.get(f"e{i}") is not None for i in range(5)] == [
        False, False, False, True, True]
    stats = evidence.stats()
    assert stats["evicted_by_reason"] == {"budget": 3}
    assert stats["bytes"] == 1000 * 1024
    # a restarted centre counts what is held from the table
    assert EvidenceStore(store, evidence.blobs, evidence.settings).stats()["bytes"] == (
        1000 * 1024)


def test_retention_removes_what_is_older(store: SqlTicketStore, tmp_path: Path) -> None:
    evidence = EvidenceStore(store, DirectoryBlobStore(tmp_path / "ev"),
                             EvidenceSettings(retention_days=1))
    put(evidence, "old", hours=0)
    put(evidence, "newer", hours=20)
    put(evidence, "now", hours=25)  # "old" is 25 h old now: removed on arrival
    assert [evidence.get(e) is not None for e in ("old", "newer", "now")] == [
        False, True, True]
    assert evidence.evict(now=T0 + timedelta(hours=46)) == 1  # "newer" is 26 h old
    assert evidence.get("newer") is None and evidence.read("newer") is None
    assert evidence.stats()["evicted_by_reason"] == {"retention": 2}


def test_settings_refuse_an_item_larger_than_the_budget() -> None:
    with pytest.raises(ValueError, match="expected max_item_bytes <= max_bytes"):
        EvidenceSettings(max_bytes=MIB, max_item_bytes=2 * MIB)


def test_the_link_quotes_the_event_id() -> None:
    assert evidence_path("st1:cam 1/a+b") == "/evidence/st1:cam%201%2Fa%2Bb"


# -- the API ---------------------------------------------------------------------------------
@pytest.fixture
def api(store: SqlTicketStore, evidence: EvidenceStore) -> Iterator[TestClient]:
    app = create_app(store=store, policies=make_policies(), grid=make_grid(),
                     auth=make_auth(), evidence=evidence)
    with TestClient(app) as client:
        yield client


def _bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def test_evidence_is_served_with_its_tickets_authorization(
        store: SqlTicketStore, evidence: EvidenceStore, api: TestClient) -> None:
    fire = make_ticket(event_ids=["st1:cam-1:e/1"], department="fire_rescue",
                       snapshot_urls=[evidence_path("st1:cam-1:e/1")])
    store.save(fire)
    put(evidence, "st1:cam-1:e/1", JPEG)
    put(evidence, "st1:cam-2:loose", PNG, content_type="image/png")  # on no ticket
    link = store.get(fire.ticket_id).snapshot_urls[0]  # type: ignore[union-attr]

    for role in ("operator", "fire", "admin", "integrator"):
        response = api.get(link, headers=_bearer(role))
        assert response.status_code == 200, (role, response.text)
        assert response.content == JPEG
        assert response.headers["content-type"] == "image/jpeg"
        assert response.headers["x-content-type-options"] == "nosniff"
    # another department: the same 404 as for evidence that does not exist
    other = api.get(link, headers=_bearer("security"))
    unknown = api.get("/evidence/st1:cam-1:never", headers=_bearer("operator"))
    assert other.status_code == unknown.status_code == 404
    assert other.json()["detail"] == ("no evidence for detection st1:cam-1:e/1 (not received "
                                      "yet, removed by the evidence budget or retention, or "
                                      "not yours)")
    # evidence on no ticket: operators may look, departments may not
    loose = api.get("/evidence/st1:cam-2:loose", headers=_bearer("operator"))
    assert loose.status_code == 200 and loose.headers["content-type"] == "image/png"
    assert api.get("/evidence/st1:cam-2:loose", headers=_bearer("fire")).status_code == 404
    # no token: 401; a role that reads no tickets: 403
    assert api.get(link).status_code == 401
    assert api.get(link, headers=_bearer("ingest")).status_code == 403


def test_a_ticket_link_before_its_image_arrives_is_404_then_200(
        store: SqlTicketStore, evidence: EvidenceStore, api: TestClient) -> None:
    ticket = make_ticket(event_ids=["late-1"], snapshot_urls=[evidence_path("late-1")])
    store.save(ticket)
    assert api.get(evidence_path("late-1"), headers=_bearer("fire")).status_code == 404
    put(evidence, "late-1", JPEG)
    response = api.get(evidence_path("late-1"), headers=_bearer("fire"))
    assert response.status_code == 200 and response.content == JPEG


def test_without_an_evidence_store_the_route_answers_404(store: SqlTicketStore) -> None:
    app = create_app(store=store, auth=make_auth())
    with TestClient(app) as client:
        response = client.get("/evidence/e1", headers=_bearer("operator"))
    assert response.status_code == 404
    assert "no evidence for detection e1" in response.json()["detail"]


def test_the_api_workers_apply_retention(store: SqlTicketStore, tmp_path: Path) -> None:
    from tests.support.waiting import wait_until

    evidence = EvidenceStore(store, DirectoryBlobStore(tmp_path / "ev"),
                             EvidenceSettings(retention_days=1))
    put(evidence, "old", hours=0)
    put(evidence, "fresh", hours=20)
    assert evidence.get("old") is not None  # 20 h old when "fresh" came: kept
    app = create_app(store=store, auth=make_auth(), evidence=evidence, run_workers=True,
                     clock=lambda: T0 + timedelta(hours=36))
    with TestClient(app):
        assert wait_until(lambda: evidence.get("old") is None, 10)
    assert evidence.get("fresh") is not None
    assert evidence.stats()["evicted_by_reason"] == {"retention": 1}
