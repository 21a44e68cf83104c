"""``gridwatch serve`` and ``gridwatch demo`` with a department's own webhook, as a user
runs them: the store writes the department's outbox rows (no central URL needed), the
department's loopback receiver gets the change signed with its own key, and a missing key
stops start-up naming the variable and the department."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.support.mosquitto import free_port
from tests.support.waiting import wait_until
from tests.ticketing.test_webhooks import Receiver
from ticketing.webhooks import verify_signature

ROOT = Path(__file__).resolve().parents[2]
GRID = str(ROOT / "sample_data" / "grid.geojson")
TOKEN = "serve-webhooks-admin-token"
FIRE_KEY = "fire-department-key"


def _site(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(
        "ticketing:\n  webhook: {interval_s: 0.2}\n  departments:\n    fire_rescue:\n"
        "      name_zh: 消防救援\n      name_en: Fire and rescue\n      level: town\n"
        f"      webhook_url: {url}\n      webhook_secret_env: TEST_FIRE_HOOK_KEY\n",
        encoding="utf-8")
    return path


def _serve(tmp_path: Path, site: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "gridwatch", "serve", "--grid", GRID, "--config",
            str(site), "--db", str(tmp_path / "t.db"), "--no-mqtt", "--port", str(port)]


def test_a_missing_department_key_stops_serve_naming_the_variable_and_the_department(
        tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TEST_FIRE_HOOK_KEY"}
    serve = subprocess.run(_serve(tmp_path, _site(tmp_path, "http://127.0.0.1:9/x"),
                                  free_port()),
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert serve.returncode == 2, serve.stderr
    assert "$TEST_FIRE_HOOK_KEY (the HMAC key of department 'fire_rescue')" in serve.stderr
    assert "Traceback" not in serve.stderr


def test_serve_delivers_a_new_ticket_to_its_departments_webhook(tmp_path: Path) -> None:
    receiver = Receiver([])
    port = free_port()
    env = {**os.environ, "GRIDWATCH_ADMIN_TOKEN": TOKEN, "TEST_FIRE_HOOK_KEY": FIRE_KEY}
    serve = subprocess.Popen(_serve(tmp_path, _site(tmp_path, receiver.url), port),
                             cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    try:
        def post_smoke() -> bool:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/tickets", method="POST",
                data=json.dumps({"kind": "smoke", "lon": 113.1024,
                                 "lat": 23.0041}).encode(),
                headers={"Authorization": f"Bearer {TOKEN}",
                         "Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return bool(response.status == 201)
            except OSError:
                return False

        assert wait_until(post_smoke, 30), "the API never took the report"
        assert wait_until(lambda: len(receiver.received) >= 1, 30), "nothing delivered"
        [request] = receiver.received
        headers, body = request["headers"], request["body"]
        assert verify_signature(FIRE_KEY.encode(), headers["X-GridWatch-Timestamp"], body,
                                headers["X-GridWatch-Signature"])
        payload = json.loads(body)
        assert payload["type"] == "ticket.created"
        assert payload["ticket"]["department"] == "fire_rescue"
        assert headers["Idempotency-Key"].endswith(":1:created:fire_rescue")
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(30) == 0
    finally:
        receiver.close()
        if serve.poll() is None:
            serve.kill()
            serve.wait(10)


def test_demo_writes_the_outbox_for_a_department_webhook_alone(tmp_path: Path) -> None:
    site = _site(tmp_path, "http://127.0.0.1:9/fire")
    demo = subprocess.run(
        [sys.executable, "-m", "gridwatch", "demo", "--once", "--no-video", "--config",
         str(site), "--data-dir", str(tmp_path / "demo")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stderr
    db = sqlite3.connect(tmp_path / "demo" / "tickets.sqlite3")
    try:
        rows = db.execute("SELECT destination, count(*) FROM outbox GROUP BY destination"
                          ).fetchall()
        fire = {t for (t,) in db.execute(
            "SELECT ticket_id FROM tickets WHERE department = 'fire_rescue'")}
        sent = {t for (t,) in db.execute("SELECT DISTINCT ticket_id FROM outbox")}
    finally:
        db.close()
    # no central URL: no centre rows; the fire department's tickets all have rows
    assert [d for d, _ in rows] == ["department/fire_rescue"] and rows[0][1] > 0
    assert fire and fire <= sent
