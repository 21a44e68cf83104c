"""/docs and /redoc render in a real browser (Debian's chromium through Playwright) with
every request outside the app blocked, as on a network with no internet; any console
error or blocked request fails the test."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.ticketing.builders import make_auth
from ticketing.api.app import create_app
from ticketing.store import SqliteTicketStore


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import uvicorn

    app = create_app(store=SqliteTicketStore(tmp_path_factory.mktemp("docs") / "t.db"),
                     auth=make_auth())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("chromium is required (apt-get install chromium); Playwright drives "
                    "it through executable_path", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.mark.parametrize(("path", "rendered"), [
    ("/docs", ".opblock"),  # Swagger UI: one block per operation
    ("/redoc", "[id^='operation/']"),  # ReDoc: one section per operation
])
def test_docs_render_offline(browser: Any, base_url: str, path: str, rendered: str) -> None:
    page = browser.new_page()
    blocked: list[str] = []
    errors: list[str] = []

    def only_the_app(route: Any) -> None:
        if route.request.url.startswith(base_url + "/"):
            route.continue_()
        else:  # the internet is not there
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_app)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(base_url + path)
    page.wait_for_selector(rendered, timeout=30_000)
    operations = page.locator(rendered).count()
    page.close()
    assert operations >= 12
    assert blocked == []
    assert errors == []
