"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright
through ``executable_path``; never a browser download), against ``gridwatch serve`` with a
real Mosquitto: MQTT detections in, the page updated live, work done from the keyboard.

Every page fails its test on a console error or a request to another host. Screenshots go
to ``$GRIDWATCH_ARTIFACTS`` (else the test's tmp dir)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import urllib.request
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from playwright.sync_api import Browser, Page, sync_playwright

from detectors.evidence_message import encode_evidence
from detectors.topics import evidence_topic
from gridwatch.config import load_config
from tests.support.mosquitto import MosquittoProcess, free_port
from tests.support.waiting import wait_until
from ticketing.store import SqliteTicketStore
from ticketing.users import UserStore

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("GRIDWATCH_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
TOKEN = "console-test-admin-token"
PASSWORD = "console-pass-1234"
WAIT_MS = 20_000  # upper bound for a live update to show; the test never sleeps


def artifacts_dir(tmp: Path) -> Path:
    """Where screenshots go: ``$GRIDWATCH_ARTIFACTS``, else ``tmp/screenshots``."""
    return Path(os.environ.get("GRIDWATCH_ARTIFACTS", tmp / "screenshots"))


def png(width: int, height: int) -> bytes:
    """A real PNG (a grey gradient), as a camera snapshot stand-in."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))
    rows = b"".join(b"\x00" + bytes((x * 255 // width) for x in range(width))
                    for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@dataclass
class Centre:
    url: str
    broker: MosquittoProcess
    db: Path
    artifacts: Path
    published: list[str] = field(default_factory=list)

    def publish(self, *, kind: str, confidence: float, lon: float, lat: float,
                source: str = "cam-1", station: str = "st-console",
                snapshot: bytes | None = None) -> str:
        """One detection (and its snapshot, first) on the centre's MQTT ingest; returns
        its event id."""
        event_id = f"{station}:{source}:{kind}:{len(self.published)}:{os.getpid()}"
        detection = {
            "schema": "gridwatch.detection/1", "event_id": event_id,
            "observed_at": (datetime.now(UTC) - timedelta(seconds=5)).isoformat(),
            "station_id": station, "source_id": source,
            "source_type": "camera" if kind != "smoke" else "smoke_sensor",
            "kind": kind, "confidence": confidence, "lon": lon, "lat": lat}
        if snapshot is not None:
            detection["evidence"] = {"snapshot_url": f"file:///var/snap/{len(self.published)}.png"}
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{event_id}")
        client.connect("127.0.0.1", self.broker.port)
        client.loop_start()
        try:
            if snapshot is not None:
                client.publish(evidence_topic("gridwatch/v1", station, source), encode_evidence(
                    event_id=event_id, content_type="image/png", image=snapshot),
                    qos=1).wait_for_publish(5)
            client.publish(f"gridwatch/v1/{station}/{source}/detection", json.dumps(detection),
                           qos=1).wait_for_publish(5)
        finally:
            client.disconnect()
            client.loop_stop()
        self.published.append(event_id)
        return event_id

    def tickets(self) -> list[dict]:
        request = urllib.request.Request(f"{self.url}/tickets?limit=500",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            items: list[dict] = json.load(response)["items"]
        return items

    def ticket(self, ticket_id: str) -> dict:
        request = urllib.request.Request(f"{self.url}/tickets/{ticket_id}",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            ticket: dict = json.load(response)
        return ticket

    def act(self, ticket: dict, action: str, **fields: str) -> dict:
        """An action as the admin token (the API, not the page)."""
        body = json.dumps({"action": action, "version": ticket["version"], **fields}).encode()
        request = urllib.request.Request(
            f"{self.url}/tickets/{ticket['ticket_id']}/actions", data=body, method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            after: dict = json.load(response)
        return after

    def ticket_of(self, event_id: str) -> dict | None:
        return next((t for t in self.tickets() if event_id in t["event_ids"]), None)


@pytest.fixture(scope="module")
def centre(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Centre]:
    if not Path(CHROMIUM).exists():  # a missing browser fails, never skips
        pytest.fail(f"chromium not found at {CHROMIUM}: install Debian's chromium "
                    f"(scripts/services.sh does) or set GRIDWATCH_CHROMIUM", pytrace=False)
    tmp = tmp_path_factory.mktemp("console")
    artifacts = artifacts_dir(tmp)
    artifacts.mkdir(parents=True, exist_ok=True)
    db = tmp / "tickets.db"
    settings = load_config(None).ticketing
    users = UserStore(SqliteTicketStore(db), departments=settings.departments)
    now = datetime.now(UTC)
    users.add(username="wang.li", password=PASSWORD, role="operator",
              display_name="王力", now=now)
    users.add(username="chen.fs", password=PASSWORD, role="department",
              department="fire_rescue", display_name="陈消防", now=now)
    port = free_port()
    with MosquittoProcess(tmp / "broker") as broker:
        env = {**os.environ, "GRIDWATCH_ADMIN_TOKEN": TOKEN}
        serve = subprocess.Popen(
            [sys.executable, "-m", "gridwatch", "serve", "--grid",
             str(ROOT / "sample_data" / "grid.geojson"), "--db", str(db),
             "--mqtt-url", broker.url, "--client-id", f"centre-{os.getpid()}",
             "--port", str(port), "--ingest-thread"],
            cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
        centre = Centre(url=f"http://127.0.0.1:{port}", broker=broker, db=db,
                        artifacts=artifacts)

        def up() -> bool:
            try:
                centre.tickets()
                return True
            except OSError:
                return False

        try:
            assert wait_until(up, 30), "gridwatch serve never answered"
            yield centre
        finally:
            serve.send_signal(signal.SIGTERM)
            try:
                serve.wait(30)
            except subprocess.TimeoutExpired:
                serve.kill()
                serve.wait(10)


@dataclass
class Watch:
    """What a page did that a test must not accept: console errors, foreign requests."""

    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    def check(self) -> None:
        assert self.errors == [], f"console errors: {self.errors}"
        assert self.foreign == [], f"requests to other hosts: {self.foreign}"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Browser, centre: Centre) -> Iterator[tuple[Page, Watch]]:
    context = browser.new_context(viewport={"width": 1366, "height": 768},
                                  locale="en-GB")
    page = context.new_page()
    watch = Watch()
    origin = urlsplit(centre.url).netloc
    page.on("console", lambda m: watch.errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: watch.errors.append(str(exc)))
    page.on("request", lambda r: None if urlsplit(r.url).scheme in ("data", "blob")
            or urlsplit(r.url).netloc == origin else watch.foreign.append(r.url))
    yield page, watch
    context.close()


def login(page: Page, centre: Centre, username: str) -> None:
    page.goto(centre.url + "/")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.press("#password", "Enter")
    page.wait_for_selector("#logout:not([hidden])", timeout=WAIT_MS)


def test_login_page_loads_clean_and_passes_an_accessibility_scan(
        page: tuple[Page, Watch], centre: Centre) -> None:
    from axe_playwright_python.sync_playwright import Axe

    pg, watch = page
    pg.goto(centre.url + "/")
    pg.wait_for_selector("form.login")
    assert pg.locator("#username").is_visible()
    results = Axe().run(pg)
    critical = [v["id"] for v in results.response["violations"] if v["impact"] == "critical"]
    assert critical == [], results.generate_report()
    pg.click("#lang")
    assert pg.locator("h2#login-title").inner_text() == "指挥中心控制台"
    assert pg.evaluate("document.documentElement.lang") == "zh-CN"
    pg.click("#lang")
    pg.screenshot(path=str(centre.artifacts / "login.png"))
    watch.check()


def test_labels_follow_the_browser_language(browser: Browser, centre: Centre) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    try:
        pg = context.new_page()
        pg.goto(centre.url + "/")
        pg.wait_for_selector("form.login")
        assert pg.locator("form.login button[type=submit]").inner_text() == "登录"
        assert pg.evaluate("document.documentElement.lang") == "zh-CN"
    finally:
        context.close()


def test_operator_sees_a_live_detection_and_confirms_it_from_the_keyboard(
        page: tuple[Page, Watch], centre: Centre) -> None:
    from axe_playwright_python.sync_playwright import Axe

    pg, watch = page
    login(pg, centre, "wang.li")
    pg.wait_for_selector("#queue-count")
    pg.wait_for_selector(".live.on", timeout=WAIT_MS)
    # a low-confidence smoke alarm goes to review; it arrives without a reload
    event_id = centre.publish(kind="smoke", confidence=0.3, lon=113.1005, lat=23.0045,
                              snapshot=png(320, 240))
    assert wait_until(lambda: centre.ticket_of(event_id) is not None, 20, interval_s=0.2)
    ticket = centre.ticket_of(event_id)
    assert ticket is not None and ticket["status"] == "pending_review"
    item = pg.locator(f'.queue-item[data-ticket="{ticket["ticket_id"]}"]')
    item.wait_for(timeout=WAIT_MS)
    item.click()
    assert pg.locator("#review-reason").inner_text() == "low confidence"
    assert pg.locator("#confirm-department").input_value() == "fire_rescue"
    # the snapshot, as the centre stored it, shown large
    snapshot = pg.locator("img.snapshot")
    assert snapshot.get_attribute("src") == ticket["snapshot_urls"][0]
    assert ticket["snapshot_urls"][0].startswith("/evidence/")
    pg.wait_for_function("() => document.querySelector('img.snapshot').naturalWidth === 320",
                         timeout=WAIT_MS)
    results = Axe().run(pg)
    critical = [v["id"] for v in results.response["violations"] if v["impact"] == "critical"]
    assert critical == [], results.generate_report()
    pg.screenshot(path=str(centre.artifacts / "review.png"))
    pg.locator("main").focus()
    pg.keyboard.press("c")
    item.wait_for(state="detached", timeout=WAIT_MS)
    assert centre.ticket(ticket["ticket_id"])["status"] == "dispatched"
    # the map shows the cell with its open ticket (it is dispatched now, still open)
    pg.goto(centre.url + "/#/map")
    cell = pg.locator(f'#cell-list button[data-cell="{ticket["cell_id"]}"]')
    cell.wait_for(timeout=WAIT_MS)
    assert pg.locator(f'.grid-map path[data-cell="{ticket["cell_id"]}"]').get_attribute(
        "class") != "s0"
    cell.click()
    pg.locator(f'#cell-panel li[data-ticket="{ticket["ticket_id"]}"]').wait_for()
    pg.screenshot(path=str(centre.artifacts / "map.png"))
    # its timeline names the operator
    pg.goto(centre.url + f"/#/ticket/{ticket['ticket_id']}")
    pg.wait_for_selector("#timeline li")
    actors = pg.locator("#timeline .actor").all_inner_texts()
    assert "王力 (wang.li)" in actors
    # the supervision board lists it under its unit with the time left
    pg.goto(centre.url + "/#/board")
    row = pg.locator(f'table.board tr[data-ticket="{ticket["ticket_id"]}"]')
    row.wait_for(timeout=WAIT_MS)
    assert row.locator(".countdown").inner_text().count(":") == 2
    assert pg.locator("#unit-fire_rescue").inner_text().startswith("Fire and rescue")
    watch.check()


def test_a_new_detection_appears_on_the_open_map_without_a_reload_and_is_dismissed(
        page: tuple[Page, Watch], centre: Centre) -> None:
    pg, watch = page
    login(pg, centre, "wang.li")
    pg.goto(centre.url + "/#/map")
    pg.wait_for_selector(".grid-map path[data-cell]")
    pg.wait_for_selector(".live.on", timeout=WAIT_MS)
    event_id = centre.publish(kind="door_forced", confidence=0.2, lon=113.1305, lat=23.0345,
                              source="door-7")
    assert wait_until(lambda: centre.ticket_of(event_id) is not None, 20, interval_s=0.2)
    ticket = centre.ticket_of(event_id)
    assert ticket is not None
    pg.locator(f'#cell-list button[data-cell="{ticket["cell_id"]}"]').wait_for(
        timeout=WAIT_MS)
    # a ticket's "show on map" link outlines its member cells and lists the cell's tickets
    pg.goto(centre.url + f"/#/map?cells={ticket['cell_id']}")
    pg.locator(f'#cell-panel li[data-ticket="{ticket["ticket_id"]}"]').wait_for(timeout=WAIT_MS)
    assert pg.locator(".grid-map .highlights path").count() == 1
    pg.goto(centre.url + "/#/review")
    item = pg.locator(f'.queue-item[data-ticket="{ticket["ticket_id"]}"]')
    item.wait_for(timeout=WAIT_MS)
    item.click()
    # dismissed from the keyboard: X, the reason, Enter
    pg.keyboard.press("x")
    pg.locator("#dismiss-reason").wait_for()
    pg.keyboard.type("wind rattled the door")
    pg.keyboard.press("Enter")
    item.wait_for(state="detached", timeout=WAIT_MS)
    after = centre.ticket(ticket["ticket_id"])
    assert (after["status"], after["dismiss_reason"]) == ("dismissed", "wind rattled the door")
    watch.check()


def test_operator_merges_a_ticket_into_a_neighbouring_cells_ticket_from_the_keyboard(
        page: tuple[Page, Watch], centre: Centre) -> None:
    pg, watch = page
    # two low-confidence smoke alarms in neighbouring cells: two pending tickets
    first = centre.publish(kind="smoke", confidence=0.3, lon=113.1405, lat=23.0445,
                           source="smoke-m1")
    second = centre.publish(kind="smoke", confidence=0.3, lon=113.1455, lat=23.0445,
                            source="smoke-m2")
    assert wait_until(lambda: centre.ticket_of(first) is not None
                      and centre.ticket_of(second) is not None, 20, interval_s=0.2)
    a, b = centre.ticket_of(first), centre.ticket_of(second)
    assert a is not None and b is not None and a["cell_id"] != b["cell_id"]
    login(pg, centre, "wang.li")
    item = pg.locator(f'.queue-item[data-ticket="{a["ticket_id"]}"]')
    item.wait_for(timeout=WAIT_MS)
    item.click()
    pg.keyboard.press("m")
    candidate = pg.locator(f'.candidates button[data-into="{b["ticket_id"]}"]')
    candidate.wait_for(timeout=WAIT_MS)
    position = pg.locator(".candidates button").all_inner_texts().index(
        candidate.inner_text())
    pg.keyboard.press(str(position + 1))
    item.wait_for(state="detached", timeout=WAIT_MS)
    merged = centre.ticket(a["ticket_id"])
    assert (merged["status"], merged["merged_into"]) == ("closed", b["ticket_id"])
    watch.check()


def test_operator_redispatches_a_returned_ticket_from_its_detail(
        page: tuple[Page, Watch], centre: Centre) -> None:
    pg, watch = page
    event_id = centre.publish(kind="door_forced", confidence=0.95, lon=113.1305, lat=23.0145,
                              source="door-r")
    assert wait_until(lambda: centre.ticket_of(event_id) is not None, 20, interval_s=0.2)
    ticket = centre.ticket_of(event_id)
    assert ticket is not None and ticket["department"] == "community_security"
    centre.act(ticket, "return", reason="not ours: the gate belongs to the estate")
    login(pg, centre, "wang.li")
    pg.goto(centre.url + f"/#/ticket/{ticket['ticket_id']}")
    pg.locator('button[data-action="dispatch"]').click(timeout=WAIT_MS)
    pg.select_option(f"#dispatch-{ticket['ticket_id']}", "property_management")
    pg.click("form.inline button[type=submit]")
    pg.locator("#ticket-status", has_text="dispatched").wait_for(timeout=WAIT_MS)
    after = centre.ticket(ticket["ticket_id"])
    assert (after["status"], after["department"]) == ("dispatched", "property_management")
    timeline = pg.locator("#timeline li").all_inner_texts()
    assert any("王力 (wang.li)" in line and "dispatch" in line for line in timeline), timeline
    watch.check()


def test_department_sees_only_its_own_tickets_and_accepts_and_resolves_one(
        page: tuple[Page, Watch], centre: Centre) -> None:
    pg, watch = page
    # a confident smoke alarm is dispatched to fire_rescue; a door alarm to another unit
    own = centre.publish(kind="smoke", confidence=0.95, lon=113.1105, lat=23.0145,
                         source="smoke-9")
    other = centre.publish(kind="door_forced", confidence=0.95, lon=113.1205, lat=23.0245,
                           source="door-9")
    assert wait_until(lambda: centre.ticket_of(own) is not None
                      and centre.ticket_of(other) is not None, 20, interval_s=0.2)
    mine, theirs = centre.ticket_of(own), centre.ticket_of(other)
    assert mine is not None and theirs is not None
    assert (mine["department"], mine["status"]) == ("fire_rescue", "dispatched")
    assert theirs["department"] != "fire_rescue"
    login(pg, centre, "chen.fs")
    row = pg.locator(f'.work-item[data-ticket="{mine["ticket_id"]}"]')
    row.wait_for(timeout=WAIT_MS)
    assert pg.locator(f'[data-ticket="{theirs["ticket_id"]}"]').count() == 0
    assert pg.locator("#nav a").all_inner_texts() == ["Work queue", "Assessment"]
    row.locator('button[data-action="accept"]').click()
    row = pg.locator(f'.work-item[data-ticket="{mine["ticket_id"]}"]')
    row.locator('button[data-action="resolve"]').click(timeout=WAIT_MS)
    pg.keyboard.type("Alarm checked: cooking smoke, detector reset")
    pg.screenshot(path=str(centre.artifacts / "work.png"))
    pg.keyboard.press("Enter")
    row.wait_for(state="detached", timeout=WAIT_MS)
    assert centre.ticket(mine["ticket_id"])["status"] == "resolved"
    # its own 考核 row, and the CSV behind the download link (same session)
    pg.goto(centre.url + "/#/evaluation")  # the view's earlier name still leads there
    link = pg.locator("#csv-link")
    link.wait_for(timeout=WAIT_MS)
    month = datetime.now(UTC).strftime("%Y-%m")
    assert link.get_attribute("href") == f"/reports/assessment?month={month}&format=csv"
    assert pg.url.endswith("/#/assessment")
    csv = pg.request.get(centre.url + str(link.get_attribute("href")))
    assert csv.ok and csv.headers["content-type"].startswith("text/csv")
    rows = csv.text().splitlines()
    assert rows[0].startswith("month,department,")
    assert [r.split(",")[1] for r in rows[1:]] == ["fire_rescue"]
    watch.check()


def test_after_the_centre_restarts_the_page_resumes_and_shows_what_changed_meanwhile(
        browser: Browser, tmp_path: Path) -> None:
    # the page keeps its EventSource; while the centre is down a report arrives (written
    # straight to the ticket database, as another replica would); after the restart the
    # browser reconnects with Last-Event-ID and the change log hands it the missed change
    from geo.grid import Grid
    from ticketing.models import Origin
    from ticketing.service import create_report

    config = load_config(None)
    db = tmp_path / "tickets.db"
    UserStore(SqliteTicketStore(db), departments=config.ticketing.departments).add(
        username="wang.li", password=PASSWORD, role="operator", now=datetime.now(UTC))
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def serve() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "gridwatch", "serve", "--grid",
             str(ROOT / "sample_data" / "grid.geojson"), "--db", str(db), "--no-mqtt",
             "--port", str(port)], cwd=ROOT, stderr=subprocess.DEVNULL,
            env={**os.environ, "GRIDWATCH_ADMIN_TOKEN": TOKEN})

    def up() -> bool:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=2).close()
            return True
        except OSError:
            return False

    def stop(process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    first = serve()
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-GB")
    second = None
    try:
        assert wait_until(up, 30), "gridwatch serve never answered"
        pg = context.new_page()
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(url + "/")
        pg.fill("#username", "wang.li")
        pg.fill("#password", PASSWORD)
        pg.press("#password", "Enter")
        pg.wait_for_selector("#queue-count")
        pg.wait_for_selector(".live.on", timeout=WAIT_MS)
        first.kill()  # the centre dies (a clean stop waits for the page's open stream)
        first.wait(10)
        pg.wait_for_selector(".live.connecting, .live.off", timeout=WAIT_MS)
        store = SqliteTicketStore(db)
        ticket, _ = create_report(
            store=store, grid=Grid.from_file(ROOT / "sample_data" / "grid.geojson"),
            policies=config.policies, settings=config.ticketing, kind="illegal_parking",
            lon=113.1005, lat=23.0045, at=datetime.now(UTC), actor="another-replica",
            origin=Origin.API, external_id="while-the-centre-was-down")
        store.close()
        assert ticket.status.value == "pending_review"
        second = serve()
        assert wait_until(up, 30), "gridwatch serve did not come back"
        pg.wait_for_selector(f'.queue-item[data-ticket="{ticket.ticket_id}"]',
                             timeout=WAIT_MS)
        pg.wait_for_selector(".live.on", timeout=WAIT_MS)
        assert errors == []
    finally:
        context.close()
        for process in (first, second):
            if process is not None and process.poll() is None:
                stop(process)
