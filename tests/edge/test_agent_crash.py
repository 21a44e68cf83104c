"""(b) ``kill -9`` of ``gridwatch edge run`` mid-run: nothing that entered the outbox is lost.

The agent runs as a real process with a webhook door source. A 202 from the webhook means
the detection is committed to the outbox, so every event id we got back must reach the
centre's broker — through a broker outage, two ``kill -9`` and restarts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.edge.helpers import listening, unique
from tests.support.mosquitto import MosquittoProcess, free_port
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parents[2]


def post(port: int, source: str, body: dict, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/webhook/{source}",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class AgentProcess:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, webhook_port: int) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gridwatch", "-v", "edge", "run", "--config",
                 str(self.config)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        ok = wait_until(lambda: post(webhook_port, "nope", {})[0] == 404
                        if self._listening(webhook_port) else False, 20)
        assert ok, self.log.read_text()[-3000:]

    @staticmethod
    def _listening(port: int) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.terminate()
        return self.proc.wait(15)


def status(config: Path) -> tuple[int, dict]:
    out = subprocess.run([sys.executable, "-m", "gridwatch", "edge", "status", "--config",
                          str(config), "--json"], cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    return out.returncode, json.loads(out.stdout)


@pytest.fixture
def broker(tmp_path: Path) -> MosquittoProcess:
    with MosquittoProcess(tmp_path / "broker") as b:
        yield b


def test_kill_9_and_restart_lose_nothing_that_entered_the_outbox(
        tmp_path: Path, broker: MosquittoProcess) -> None:
    station = unique("st")
    webhook_port = free_port()
    config = tmp_path / "station.yaml"
    config.write_text(
        f"station_id: {station}\n"
        f"state_dir: state\n"
        f"uplink: {{port: {broker.port}, reconnect_min_s: 1, reconnect_max_s: 1}}\n"
        f"webhook: {{port: {webhook_port}}}\n"
        "metrics: {port: 0}\n"
        "sources:\n"
        "  - {type: access_control, id: gate, transport: webhook, lon: 113.01, lat: 23.01,"
        " debounce_s: 0.000001}\n", encoding="utf-8")
    agent = AgentProcess(config, tmp_path / "agent.log")
    committed: list[str] = []

    def force(n: int) -> None:
        for _ in range(n):
            code, body = post(webhook_port, "gate", {"event": "forced"})
            assert code == 202, body
            committed.extend(body["detections"])

    with listening(broker.url, f"gridwatch/v1/{station}/+/detection",
                   client_id=unique("centre"), clean_session=False) as centre:
        agent.start(webhook_port)
        force(150)
        broker.stop()  # uplink down: detections pile up in the outbox
        force(150)
        code, report = status(config)
        assert code == 0 and report["agent"]["alive"]
        assert report["outbox"]["depth"] > 0
        agent.kill9()  # with a backlog on disk
        code, report = status(config)
        assert code == 1 and not report["agent"]["alive"]
        broker.start()
        agent.start(webhook_port)
        force(150)
        agent.kill9()  # right after the last commit: some of these are still in flight
        agent.start(webhook_port)

        def received() -> set[str]:
            return {json.loads(p)["event_id"] for p in centre.snapshot()}

        assert len(set(committed)) == len(committed) == 450
        assert wait_until(lambda: set(committed) <= received(), 60), (
            f"{len(set(committed) - received())} lost", agent.log.read_text()[-3000:])
        # a raw listener is no centre: no receipts, so the broker's PUBACK is as far as
        # it goes (tests/faults/ run the real centre)
        assert wait_until(lambda: status(config)[1]["outbox"]["pending"] == 0, 20)
        assert agent.terminate() == 0
    code, report = status(config)
    assert report["outbox"]["dropped"] == 0
    assert report["outbox"]["published"] >= 450
