"""/docs and /redoc work offline: the pages reference only assets the app serves itself
(from the fastapi-offline package), and those assets are there."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from tests.ticketing.builders import make_auth
from ticketing.api.app import create_app
from ticketing.store import SqliteTicketStore

ASSET = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url:\s*["']([^"']+)["']""")


@pytest.fixture(scope="module")
def docs_client() -> TestClient:
    return TestClient(create_app(store=SqliteTicketStore(":memory:"), auth=make_auth()))


@pytest.mark.parametrize(("page", "min_assets"), [("/docs", 3), ("/redoc", 2)])
def test_docs_pages_use_only_local_assets(docs_client: TestClient, page: str,
                                          min_assets: int) -> None:
    response = docs_client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html and "https://" not in html  # nothing from elsewhere
    refs = [a or b for a, b in ASSET.findall(html)]
    assert len(refs) >= min_assets, refs
    for ref in refs:
        assert ref.startswith("/"), f"{page} loads {ref} from elsewhere"
        asset = docs_client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 100, ref
    assert "/openapi.json" in refs


def test_swagger_ui_does_not_call_the_online_validator(docs_client: TestClient) -> None:
    assert '"validatorUrl": null' in docs_client.get("/docs").text


def test_the_assets_are_the_real_bundles(docs_client: TestClient) -> None:
    js = docs_client.get("/static-offline-docs/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 500_000
    assert js.headers["content-type"].startswith(("application/javascript", "text/javascript"))
    redoc = docs_client.get("/static-offline-docs/redoc.standalone.js")
    assert redoc.status_code == 200 and len(redoc.content) > 500_000
    served = docs_client.get("/docs-assets/redoc.standalone.js")  # what /redoc loads
    assert served.status_code == 200 and len(served.content) > 500_000
    assert b"https://cdn." not in served.content
    css = docs_client.get("/static-offline-docs/swagger-ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
