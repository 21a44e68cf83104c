"""``gridwatch edge run|status --config station.yaml``: the community-station agent."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import threading
import time
from typing import Any

from gridwatch.errors import UserError

STALE_AFTER_S = 10.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("edge", help="run or inspect the edge agent of a station")
    sub = parser.add_subparsers(dest="edge_command", metavar="ACTION", required=True)
    run_p = sub.add_parser("run", help="run the agent until SIGINT/SIGTERM")
    run_p.add_argument("--config", required=True, help="station YAML (station.example.yaml)")
    run_p.set_defaults(func=run)
    status_p = sub.add_parser("status", help="outbox depth, uplink, sources of a station")
    status_p.add_argument("--config", required=True, help="station YAML")
    status_p.add_argument("--json", action="store_true", help="print JSON")
    status_p.set_defaults(func=status)


def run(args: argparse.Namespace) -> int:
    from configs.mqtt import make_client
    from edge.agent import AgentStartupError, EdgeAgent
    from edge.config import load_station_config

    config = load_station_config(args.config)
    config.uplink.password()  # a missing secret fails now, not in a worker
    config.local_mqtt.password()
    for connection in (config.uplink, config.local_mqtt):  # so do unreadable TLS files
        make_client(connection, client_id="gridwatch-preflight")
    try:
        agent = EdgeAgent(config)
    except AgentStartupError as exc:
        raise UserError(str(exc)) from None
    done = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.start()
    except AgentStartupError as exc:
        raise UserError(str(exc)) from None
    try:
        while not done.wait(1.0):
            pass
    finally:
        agent.stop()
    return 0


def _outbox_snapshot(path: str) -> dict[str, Any]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.OperationalError as exc:
        raise UserError(f"{path}: cannot open the outbox: {exc}") from None
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
        # an outbox from before receipts (the agent upgrades it at its next start): all
        # of its rows are pending
        sent = "sent_at IS NOT NULL" if "sent_at" in columns else "0"
        depth, awaiting, oldest, oldest_sent = db.execute(
            f"SELECT COUNT(*), COALESCE(SUM({sent}), 0), MIN(created_at), "
            f"MIN(CASE WHEN {sent} THEN created_at END) FROM outbox").fetchone()
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path}: not an edge outbox: {exc}") from None
    finally:
        db.close()
    now = time.time()
    report: dict[str, Any] = {
        "depth": int(depth), "pending": int(depth) - int(awaiting),
        "awaiting_receipt": int(awaiting),
        "oldest_age_s": None if oldest is None else round(now - oldest, 1),
        "oldest_awaiting_receipt_age_s": (None if oldest_sent is None
                                          else round(now - oldest_sent, 1))}
    for name in ("enqueued", "published", "receipted", "receipts_unknown", "resent",
                 "dropped", "dropped_unreceipted", "evidence_dropped"):
        report[name] = int(counters.get(name, 0))
    return report


def _pid_alive(pid: object) -> bool:
    """Whether the agent's process still exists (the status file is on the same box)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def status(args: argparse.Namespace) -> int:
    from edge.config import load_station_config

    config = load_station_config(args.config)
    report: dict[str, Any] = {"station_id": config.station_id, "agent": None}
    if config.outbox_path.exists():
        report["outbox"] = _outbox_snapshot(str(config.outbox_path))
    else:
        report["outbox"] = None
    if config.status_path.exists():
        try:
            agent = json.loads(config.status_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{config.status_path}: unreadable status file: {exc}") from None
        age = time.time() - float(agent.get("updated_at", 0))
        agent["alive"] = (bool(agent.get("running")) and age < STALE_AFTER_S
                          and _pid_alive(agent.get("pid")))
        agent["age_s"] = round(age, 1)
        report["agent"] = agent
    alive = bool(report["agent"] and report["agent"]["alive"])
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if alive else 1
    print(f"station {config.station_id}")
    agent = report["agent"]
    if agent is None:
        print("  agent: never ran here (no status file)")
    else:
        state = "running" if alive else f"NOT RUNNING (last update {agent['age_s']}s ago)"
        print(f"  agent: {state}, pid {agent.get('pid')}")
        up = agent.get("uplink", {})
        connected = up.get("connected") and alive
        print(f"  uplink: {up.get('host')}:{up.get('port')} "
              f"{'connected' if connected else 'disconnected'}"
              + (f" ({up['last_error']})" if not connected and up.get("last_error") else ""))
        if up.get("drops"):
            print(f"  uplink dropped by the broker {up['drops']} time(s); last: "
                  f"{up.get('last_drop')}")
    ob = report["outbox"]
    if ob is None:
        print(f"  outbox: none yet at {config.outbox_path}")
    else:
        oldest = "" if ob["oldest_age_s"] is None else f", oldest {ob['oldest_age_s']}s"
        print(f"  outbox: {ob['depth']} held{oldest}: {ob['pending']} pending (not yet "
              f"acknowledged by the broker), {ob['awaiting_receipt']} awaiting the centre's "
              f"receipt; enqueued {ob['enqueued']}, published {ob['published']}, receipted "
              f"{ob['receipted']}, dropped {ob['dropped']}"
              + (f" ({ob['dropped_unreceipted']} of them acknowledged by the broker, no "
                 f"receipt)" if ob["dropped_unreceipted"] else ""))
        if ob["dropped"] or ob["evidence_dropped"]:
            print(f"  outbox: DROPPED {ob['dropped']} detection(s) and "
                  f"{ob['evidence_dropped']} image(s) to the disk budget (outbox.max_bytes)")
        rec = (agent or {}).get("receipts") or {}
        if rec.get("enabled") and ob["awaiting_receipt"]:
            last = rec.get("last_receipt_at")
            when = "never" if last is None else f"{time.time() - last:.0f}s ago"
            print(f"  receipts: last from the centre {when}; "
                  f"{ob['awaiting_receipt']} awaiting, oldest "
                  f"{ob['oldest_awaiting_receipt_age_s']}s; re-sent {ob['resent']} in all")
    if agent is not None:
        now = time.time()
        for source_id, seen in sorted(agent.get("sources", {}).items()):
            when = "never" if seen is None else f"{now - seen:.0f}s ago"
            print(f"  source {source_id}: last seen {when}")
        for source_id, n in sorted(agent.get("clock_skew", {}).items()):
            print(f"  source {source_id}: CLOCK SKEW, {n} detection(s) not sent (observed_at "
                  f"too far from this box's clock; see clock: in station.yaml)")
        for camera_id, cam in sorted(agent.get("cameras", {}).items()):
            if cam.get("healthy", True):
                continue
            print(f"  camera {camera_id}: UNHEALTHY, detectors failing "
                  f"({cam.get('detector_errors', 0)} failed frames): {cam.get('last_error')}")
        dead = [name for name, ok in agent.get("workers", {}).items() if not ok]
        if dead and alive:
            print(f"  workers down (restarting): {', '.join(sorted(dead))}")
    return 0 if alive else 1
