"""The console's HTTP side: the page and its assets are served by the app with a
same-origin-only CSP, ``/console/session`` tells the page whether it is signed in
without a 401, and ``/console/map`` gives the grid as the map draws it (readers only)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from geo.grid import Grid
from tests.builders import make_grid, make_grid_geojson
from tests.ticketing.builders import make_auth, make_policies
from tests.ticketing.test_users import PASSWORD, cheap_hasher
from ticketing.api.app import create_app
from ticketing.auth import Role
from ticketing.console import static_dir
from ticketing.console.mapdata import map_data
from ticketing.login import CSRF_HEADER
from ticketing.store import SqliteTicketStore
from ticketing.users import UserStore

ASSETS = ["app.js", "api.js", "map.js", "i18n.js", "console.css"]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    store = SqliteTicketStore(tmp_path / "t.db")
    users = UserStore(store, hasher=cheap_hasher())
    from tests.ticketing.builders import T0

    users.add(username="wang.li", password=PASSWORD, role=Role.OPERATOR,
              display_name="王力", now=T0)
    users.add(username="chen.fs", password=PASSWORD, role=Role.DEPARTMENT,
              department="fire_rescue", now=T0)
    app = create_app(store=store, policies=make_policies(), grid=make_grid(),
                     auth=make_auth(), users=users)
    with TestClient(app) as c:
        yield c


def test_the_page_and_its_assets_are_served_with_a_same_origin_policy(
        client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert '<script type="module" src="/console/static/app.js">' in page.text
    for name in ASSETS:
        asset = client.get(f"/console/static/{name}")
        assert asset.status_code == 200, name
        assert asset.text.strip()
    assert client.get("/console/static/no-such.js").status_code == 404


@pytest.mark.parametrize("name", ["index.html", *ASSETS])
def test_assets_reference_nothing_outside_the_app(name: str) -> None:
    text = (static_dir() / name).read_text(encoding="utf-8")
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
    assert "@import" not in text and "@font-face" not in text


def test_session_answers_200_signed_out_and_carries_the_csrf_token_signed_in(
        client: TestClient) -> None:
    out = client.get("/console/session")
    assert out.status_code == 200
    assert out.json() == {"signed_in": False, "me": None}
    login = client.post("/auth/login", json={"username": "wang.li", "password": PASSWORD})
    assert login.status_code == 200
    body = client.get("/console/session").json()
    assert body["signed_in"] is True
    assert body["me"]["username"] == "wang.li" and body["me"]["display_name"] == "王力"
    assert body["me"]["csrf_token"] == login.json()["csrf_token"]
    logout = client.post("/auth/logout", headers={CSRF_HEADER: body["me"]["csrf_token"]})
    assert logout.status_code == 204
    assert client.get("/console/session").json()["signed_in"] is False


def test_session_is_for_browsers_a_bearer_token_is_not_a_console_session(
        client: TestClient, as_role: dict[str, dict[str, str]]) -> None:
    answer = client.get("/console/session", headers=as_role["operator"])
    assert answer.status_code == 200 and answer.json()["signed_in"] is False


def test_map_data_needs_a_reader_and_gives_cells_neighbours_and_outlines(
        client: TestClient, as_role: dict[str, dict[str, str]]) -> None:
    assert client.get("/console/map").status_code == 401
    assert client.get("/console/map", headers=as_role["ingest"]).status_code == 403
    answer = client.get("/console/map", headers=as_role["fire"])
    assert answer.status_code == 200
    data = answer.json()
    assert data["bbox"] == [0, 0, 3, 3]
    assert len(data["cells"]) == 9
    centre = next(c for c in data["cells"] if c["cell_id"] == "C11")
    assert len(centre["neighbours"]) == 8 and "C11" not in centre["neighbours"]
    assert centre["town"] == "TownA" and centre["village"] == "V1"
    assert [t["name"] for t in data["towns"]] == ["TownA", "TownB"]
    assert [v["name"] for v in data["villages"]] == ["V0", "V1", "V2"]


def test_map_data_without_a_grid_is_a_422(tmp_path: Path,
                                          as_role: dict[str, dict[str, str]]) -> None:
    app = create_app(store=SqliteTicketStore(tmp_path / "t.db"), auth=make_auth())
    with TestClient(app) as c:
        answer = c.get("/console/map", headers=as_role["operator"])
    assert answer.status_code == 422


def test_town_outline_is_the_union_of_its_cells() -> None:
    data = map_data(make_grid(3, 3))
    town_a = next(t for t in data["towns"] if t["name"] == "TownA")
    assert town_a["cells"] == 6
    [ring] = town_a["rings"]  # two columns of unit squares: one rectangle, no inner edges
    xs, ys = {x for x, _ in ring}, {y for _, y in ring}
    assert (min(xs), max(xs), min(ys), max(ys)) == (0, 2, 0, 3)
    assert len(ring) == 5  # the four corners and the closing point


def test_cells_without_a_town_have_no_outline_and_coordinates_are_rounded() -> None:
    geojson = make_grid_geojson(2, 1)
    for feature in geojson["features"]:
        feature["properties"].pop("town")
        feature["geometry"]["coordinates"][0][1][0] += 1e-9
    data = map_data(Grid.from_geojson(geojson))
    assert data["towns"] == []
    assert all(abs(x * 1e6 - round(x * 1e6)) < 1e-6
               for cell in data["cells"] for ring in cell["rings"] for x, _ in ring)
