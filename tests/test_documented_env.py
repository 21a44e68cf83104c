"""Every ``GRIDWATCH_*`` environment variable the docs name does what they say (issue 12
part 5): one test per variable, and a test that fails when docs/, README.md or configs/
name a variable that has none here."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect

from tests.builders import make_grid
from tests.ticketing.builders import make_policies

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTED_IN = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                 *sorted((ROOT / "configs").glob("*"))]

# variable → the test(s) below that show it honoured
TESTED: dict[str, str] = {
    "GRIDWATCH_TICKETS_URL": "test_tickets_url_wins_for_every_command",
    "GRIDWATCH_ADMIN_TOKEN": "test_admin_token_from_the_environment",
    "GRIDWATCH_API_TOKENS": "test_api_tokens_from_the_environment",
    "GRIDWATCH_WEBHOOK_SECRET": "test_webhook_secret_from_the_environment",
    "GRIDWATCH_UPLINK_PASSWORD": "test_uplink_password_from_the_environment",
    "GRIDWATCH_MQTT_PASSWORD": "test_serve_mqtt_password_from_the_environment",
    "GRIDWATCH_WEBHOOK_TOKEN": "test_edge_webhook_token_from_the_environment",
    "GRIDWATCH_KAFKA_BROKER": "test_worker_settings_from_the_environment",
    "GRIDWATCH_KAFKA_PARTITIONS": "test_worker_settings_from_the_environment",
    "GRIDWATCH_KAFKA_REPLICATION": "test_worker_settings_from_the_environment",
    "GRIDWATCH_KAFKA_APP_ID": "test_worker_settings_from_the_environment",
    "GRIDWATCH_GRID": "test_worker_settings_from_the_environment",
    "GRIDWATCH_CONFIG": "test_worker_settings_from_the_environment",
    "GRIDWATCH_WORKER_WEB_PORT": "test_worker_settings_from_the_environment",
    "GRIDWATCH_TICKETS_SCHEMA": "test_worker_store_schema_from_the_environment",
    "GRIDWATCH_TEST_MQTT_URL": "test_test_service_urls_from_the_environment",
    "GRIDWATCH_TEST_REDIS_URL": "test_test_service_urls_from_the_environment",
    "GRIDWATCH_TEST_POSTGRES_URL": "test_test_service_urls_from_the_environment",
    "GRIDWATCH_ARTIFACTS": "test_console_artifacts_folder_from_the_environment",
    "GRIDWATCH_TEST_ULTRALYTICS": "test_the_ultralytics_test_is_collected_only_when_asked",
    **{f"GRIDWATCH_KAFKA_{name}": "test_scaleout_tuning_from_the_environment" for name in (
        "INPUT_PARTITIONS", "LATENESS_S", "IDLE_S", "TICK_S", "BATCH_MAX", "METRICS_S",
        "SESSION_TIMEOUT_S", "HEARTBEAT_S", "REBALANCE_TIMEOUT_S", "EVENT_CLOCK",
        "LOG_REPEAT_S", "STOP_FLUSH_S", "STOP_S", "ALIGN_S", "CELLS_BATCH_MAX",
        "SPARE_HOTSPOT_OWNER", "FETCH_WAIT_S")},
    "GRIDWATCH_BRIDGE_MQTT_PASSWORD": "test_bridge_mqtt_password_from_the_environment",
    "GRIDWATCH_KAFKA_TRACE": "test_kafka_trace_from_the_environment",
}


def documented() -> set[str]:
    names: set[str] = set()
    for path in DOCUMENTED_IN:
        if path.is_file():
            names.update(re.findall(r"GRIDWATCH_[A-Z][A-Z0-9_]*[A-Z0-9](?![A-Z0-9_])",
                                    path.read_text(encoding="utf-8", errors="replace")))
    return names


def test_every_documented_variable_has_a_test_here() -> None:
    names = documented()
    assert "GRIDWATCH_TICKETS_URL" in names  # the scan reads the docs at all
    missing = sorted(names - set(TESTED))
    assert not missing, f"documented but not tested in {__file__}: {missing}"
    for test in set(TESTED.values()):
        assert callable(globals().get(test)), f"TESTED names a missing test {test}"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDWATCH_")
           or k.startswith("GRIDWATCH_TEST_")}
    return {**env, **extra}


def gridwatch(*argv: str, env: dict[str, str], cwd: Path = ROOT,
              stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gridwatch", *argv], cwd=cwd, env=env,
                          input=stdin, capture_output=True, text=True, timeout=120)


# -- the ticket store ---

@pytest.mark.parametrize("command", ["users", "hotspots", "worker"])
def test_tickets_url_wins_for_every_command(tmp_path: Path, command: str) -> None:
    # serve: tests/gridwatch/test_serve.py::test_serve_uses_the_store_named_by_gridwatch_
    # tickets_url (it needs a running server); the others read the store and exit
    shared, own = tmp_path / "shared.db", tmp_path / "own.db"
    env = clean_env(GRIDWATCH_TICKETS_URL=f"sqlite:///{shared}")
    grid = ROOT / "sample_data" / "grid.geojson"
    argv = {"users": ["users", "list", "--config", str(tmp_path / "none.yaml")],
            "hotspots": ["hotspots", "status", "--db", str(own), "--json"],
            "worker": ["worker", "--check", "--grid", str(grid), "--store-url", str(own)],
            }[command]
    if command == "users":  # no --tickets-url and a config with its own storage_url
        (tmp_path / "none.yaml").write_text(
            f"ticketing:\n  storage_url: sqlite:///{own}\n", encoding="utf-8")
    result = gridwatch(*argv, env=env)
    assert result.returncode == 0, result.stderr
    assert shared.exists() and not own.exists()


# -- API tokens ---

def app_client(store_path: Path) -> TestClient:
    from ticketing.api.app import create_app
    from ticketing.store import SqliteTicketStore

    # auth=None: the app reads GRIDWATCH_ADMIN_TOKEN / GRIDWATCH_API_TOKENS
    return TestClient(create_app(store=SqliteTicketStore(store_path), policies=make_policies(),
                                 grid=make_grid()))


def test_admin_token_from_the_environment(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRIDWATCH_API_TOKENS", raising=False)
    monkeypatch.setenv("GRIDWATCH_ADMIN_TOKEN", "env-admin-token")
    with app_client(tmp_path / "t.db") as client:
        assert client.get("/tickets", headers={
            "Authorization": "Bearer env-admin-token"}).status_code == 200
        assert client.get("/auth/me", headers={
            "Authorization": "Bearer env-admin-token"}).json()["role"] == "admin"
        assert client.get("/tickets", headers={
            "Authorization": "Bearer other"}).status_code == 401


def test_api_tokens_from_the_environment(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRIDWATCH_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("GRIDWATCH_API_TOKENS",
                       "operator:op-tok,department/fire_rescue:fire-tok,ingest:in-tok")
    with app_client(tmp_path / "t.db") as client:
        def me(token: str) -> dict[str, object]:
            response = client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            body: dict[str, object] = response.json()
            return body

        assert me("op-tok")["role"] == "operator"
        fire = me("fire-tok")
        assert (fire["role"], fire["department"]) == ("department", "fire_rescue")
        assert client.get("/tickets", headers={
            "Authorization": "Bearer in-tok"}).status_code == 403  # ingest reads nothing


# -- webhooks ---

def test_webhook_secret_from_the_environment(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from ticketing.config import WebhookSettings
    from ticketing.store import SqliteTicketStore
    from ticketing.webhooks import WebhookDispatcher, sign, verify_signature

    monkeypatch.setenv("GRIDWATCH_WEBHOOK_SECRET", "hmac-key-from-env")
    store = SqliteTicketStore(tmp_path / "t.db", webhooks=True)
    dispatcher = WebhookDispatcher.from_settings(
        store=store, settings=WebhookSettings(url="http://127.0.0.1:9/hook"))
    signature = sign(dispatcher.secret, "1700000000", b"{}")
    assert verify_signature(b"hmac-key-from-env", "1700000000", b"{}", signature)


# -- MQTT passwords ---

def test_uplink_password_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from configs.reader import ConfigFileError
    from edge.config import UplinkSettings

    uplink = UplinkSettings(username="st-001", password_env="GRIDWATCH_UPLINK_PASSWORD")
    monkeypatch.delenv("GRIDWATCH_UPLINK_PASSWORD", raising=False)
    with pytest.raises(ConfigFileError, match="GRIDWATCH_UPLINK_PASSWORD is not set"):
        uplink.password()
    monkeypatch.setenv("GRIDWATCH_UPLINK_PASSWORD", "pw-from-env")
    assert uplink.password() == "pw-from-env"
    # a real broker login with a password from the environment:
    # tests/edge/test_secure_broker.py


def test_serve_mqtt_password_from_the_environment(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.mosquitto import MosquittoProcess

    with MosquittoProcess(tmp_path / "broker", users={"centre": "pw-from-env"}) as broker:
        args = ["serve", "--grid", str(ROOT / "sample_data" / "grid.geojson"),
                "--db", str(tmp_path / "t.db"), "--mqtt-url", broker.url,
                "--mqtt-username", "centre", "--mqtt-password-env",
                "GRIDWATCH_MQTT_PASSWORD"]
        missing = gridwatch(*args, env=clean_env())
        assert missing.returncode == 2
        assert "GRIDWATCH_MQTT_PASSWORD is not set" in missing.stderr
        from gridwatch.cli import build_parser
        from gridwatch.commands.serve import mqtt_connection
        from tests.edge.helpers import Centre

        monkeypatch.setenv("GRIDWATCH_MQTT_PASSWORD", "pw-from-env")
        connection = mqtt_connection(build_parser().parse_args(args))
        assert connection.password() == "pw-from-env"
        centre = Centre(tmp_path, connection=connection).start()  # logs in and subscribes
        centre.close()


# -- the edge webhook token ---

def test_edge_webhook_token_from_the_environment(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.config import StationConfig, WebhookSettings
    from edge.sources import SensorHub, WebhookServer

    monkeypatch.setenv("GRIDWATCH_WEBHOOK_TOKEN", "door-token")
    config = StationConfig(station_id="st-env", state_dir=tmp_path / "edge")
    server = WebhookServer(WebhookSettings(port=0, token_env="GRIDWATCH_WEBHOOK_TOKEN"),
                           SensorHub(config, started_at=0.0), lambda detections: None,
                           "st-env")
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert server.ready.wait(10)

        def post(token: str | None) -> int:
            request = urllib.request.Request(
                f"http://127.0.0.1:{server.bound_port}/webhook/door-1", data=b"{}",
                headers={"Authorization": f"Bearer {token}"} if token else {})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                return exc.code

        assert post(None) == 401
        assert post("wrong") == 401
        assert post("door-token") == 404  # past the token check: no source door-1 here
    finally:
        stop.set()
        thread.join(10)


# -- the scale-out worker -------------------------------------------------------------------------

def test_worker_settings_from_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "worker.yaml"
    config.write_text("stream:\n  lateness_s: 7\n", encoding="utf-8")
    env = clean_env(
        GRIDWATCH_KAFKA_BROKER="kafka://k1:9092;kafka://k2:9092",
        GRIDWATCH_KAFKA_PARTITIONS="12", GRIDWATCH_KAFKA_REPLICATION="3",
        GRIDWATCH_KAFKA_APP_ID="gw-env", GRIDWATCH_GRID=str(ROOT / "sample_data" /
                                                            "grid.geojson"),
        GRIDWATCH_CONFIG=str(config), GRIDWATCH_WORKER_WEB_PORT="6066",
        GRIDWATCH_TICKETS_URL=f"sqlite:///{tmp_path / 'w.db'}")
    result = gridwatch("worker", "--check", env=env)
    assert result.returncode == 0, result.stderr
    for label, value in [("app id", "gw-env"), ("broker", "kafka://k1:9092;kafka://k2:9092"),
                         ("by cell", r"\S+ \(12 partitions, key = cell id\)"),
                         ("replication", "3"), ("grid", r"\d+ cells \(.*grid\.geojson\)"),
                         ("config", re.escape(str(config))), ("web port", "6066"),
                         ("ticket store", ".*w\\.db")]:
        assert re.search(rf"^{label} +{value}$", result.stdout, re.M), (label, result.stdout)
    assert (tmp_path / "w.db").exists()
    bad = gridwatch("worker", "--check", env={**env, "GRIDWATCH_CONFIG": str(tmp_path /
                                                                             "no.yaml")})
    assert bad.returncode == 2 and "no.yaml" in bad.stderr  # the config is really read


def test_worker_store_schema_from_the_environment(tmp_path: Path,
                                                  pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    env = clean_env(GRIDWATCH_GRID=str(ROOT / "sample_data" / "grid.geojson"),
                    GRIDWATCH_TICKETS_URL=url, GRIDWATCH_TICKETS_SCHEMA=schema)
    result = gridwatch("worker", "--check", env=env)
    assert result.returncode == 0, result.stderr
    assert f"store schema  {schema}" in result.stdout
    from ticketing.store import _normalise_url

    engine = create_engine(_normalise_url(url))
    try:
        assert "tickets" in inspect(engine).get_table_names(schema=schema)
    finally:
        engine.dispose()


# -- the test suite's own ---

def test_test_service_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import DEFAULT_URLS, service_url

    for name in ("mqtt", "redis", "postgres"):
        monkeypatch.delenv(f"GRIDWATCH_TEST_{name.upper()}_URL", raising=False)
        assert service_url(name) == DEFAULT_URLS[name]
        monkeypatch.setenv(f"GRIDWATCH_TEST_{name.upper()}_URL", f"{name}://elsewhere:1")
        assert service_url(name) == f"{name}://elsewhere:1"


def test_console_artifacts_folder_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.ticketing.test_console_browser import artifacts_dir

    monkeypatch.delenv("GRIDWATCH_ARTIFACTS", raising=False)
    assert artifacts_dir(tmp_path) == tmp_path / "screenshots"
    monkeypatch.setenv("GRIDWATCH_ARTIFACTS", str(tmp_path / "kept"))
    assert artifacts_dir(tmp_path) == tmp_path / "kept"


def test_the_ultralytics_test_is_collected_only_when_asked() -> None:
    # GRIDWATCH_TEST_ULTRALYTICS=1 (make test-ultralytics) collects the torch-backed test
    target = "tests/detectors/test_real_model_ultralytics.py"

    def collected(**extra: str) -> str:
        env = {k: v for k, v in clean_env(**extra).items()
               if extra or k != "GRIDWATCH_TEST_ULTRALYTICS"}
        return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                               "-p", "no:cacheprovider", "tests/detectors"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=120).stdout

    assert target not in collected()
    assert target in collected(GRIDWATCH_TEST_ULTRALYTICS="1")


def test_scaleout_tuning_from_the_environment(tmp_path: Path) -> None:
    env = clean_env(
        GRIDWATCH_GRID=str(ROOT / "sample_data" / "grid.geojson"),
        GRIDWATCH_TICKETS_URL=f"sqlite:///{tmp_path / 'w.db'}",
        GRIDWATCH_KAFKA_INPUT_PARTITIONS="6", GRIDWATCH_KAFKA_LATENESS_S="30",
        GRIDWATCH_KAFKA_IDLE_S="4")
    result = gridwatch("worker", "--check", env=env)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^input +6 partitions, lateness 30 s, idle after 4 s$", result.stdout,
                     re.M), result.stdout
    from stream.faust_app import ScaleoutSettings

    settings = ScaleoutSettings.from_env({
        "GRIDWATCH_KAFKA_TICK_S": "0.5", "GRIDWATCH_KAFKA_BATCH_MAX": "10",
        "GRIDWATCH_KAFKA_METRICS_S": "2", "GRIDWATCH_KAFKA_SESSION_TIMEOUT_S": "6",
        "GRIDWATCH_KAFKA_HEARTBEAT_S": "0.5", "GRIDWATCH_KAFKA_REBALANCE_TIMEOUT_S": "8",
        "GRIDWATCH_KAFKA_EVENT_CLOCK": "1", "GRIDWATCH_KAFKA_LOG_REPEAT_S": "60",
        "GRIDWATCH_KAFKA_STOP_FLUSH_S": "2", "GRIDWATCH_KAFKA_STOP_S": "9"})
    assert (settings.tick_s, settings.batch_max, settings.metrics_s,
            settings.session_timeout_s, settings.heartbeat_s, settings.rebalance_timeout_s,
            settings.event_clock, settings.log_repeat_s, settings.stop_flush_s,
            settings.stop_s) == (0.5, 10, 2.0, 6.0, 0.5, 8.0, True, 60.0, 2.0, 9.0)

    # and they reach what they tune: the input pump's alignment, the cells batches, the
    # assignors' sparing of the hot-spot stage's owner
    from gridwatch.commands.worker import scaleout_for
    from gridwatch.config import load_config
    from tests.builders import make_grid
    from ticketing.store import SqliteTicketStore

    settings = ScaleoutSettings.from_env({
        "GRIDWATCH_KAFKA_ALIGN_S": "120", "GRIDWATCH_KAFKA_CELLS_BATCH_MAX": "4",
        "GRIDWATCH_KAFKA_SPARE_HOTSPOT_OWNER": "0", "GRIDWATCH_KAFKA_FETCH_WAIT_S": "0.25"})
    assert (settings.align_s, settings.cells_batch_max, settings.spare_hotspot_owner,
            settings.fetch_wait_s) == (120.0, 4, False, 0.25)
    scaleout = scaleout_for(settings, load_config(), make_grid(),
                            SqliteTicketStore(tmp_path / "t.sqlite3"), received=None)
    assert scaleout.input.align_s == 120.0
    assert scaleout.app.spare_hotspot_owner is False
    # the fetch wait reaches both consumers: the input pump's and faust's (whose own
    # is a fixed 1.5 s)
    assert scaleout.input._options["fetch_max_wait_ms"] == 250

    async def faust_consumer_wait() -> int:
        consumer = scaleout.app.consumer._thread._create_worker_consumer(
            scaleout.app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()  # never started: only closes it

    assert asyncio.run(faust_consumer_wait()) == 250
    assert ScaleoutSettings.from_env({}).fetch_wait_s == 0.1
    assert ScaleoutSettings.from_env({"GRIDWATCH_KAFKA_ALIGN_S": "0"}).align_s == 0  # off


@pytest.mark.services
def test_bridge_mqtt_password_from_the_environment(tmp_path: Path) -> None:
    """The bridge logs in to a broker that requires a password only with the one from
    the environment."""
    import time

    from tests.support.mosquitto import MosquittoProcess
    from tests.support.tansu import TansuProcess

    with TansuProcess() as kafka, MosquittoProcess(tmp_path / "mq",
                                                   users={"bridge": "s3cret"}) as mq:
        def bridge_log(password: str) -> str:
            log = tmp_path / f"bridge-{password}.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "gridwatch", "-v", "bridge", "--mqtt",
                     f"mqtt://bridge@127.0.0.1:{mq.port}", "--broker", kafka.url,
                     "--client-id", f"b-{password}"], cwd=ROOT, stdout=out,
                    stderr=subprocess.STDOUT,
                    env=clean_env(GRIDWATCH_BRIDGE_MQTT_PASSWORD=password))
            deadline = time.monotonic() + 30
            text = ""
            while time.monotonic() < deadline:
                text = log.read_text(errors="replace")
                if "bridging MQTT" in text or "refused the connection" in text:
                    break
                time.sleep(0.2)
            proc.terminate()
            proc.wait(timeout=20)
            return text

        assert "bridging MQTT" in bridge_log("s3cret")
        wrong = bridge_log("wrong")
        assert "refused the connection" in wrong and "bridging MQTT" not in wrong


def test_kafka_trace_from_the_environment(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``GRIDWATCH_KAFKA_TRACE=DIR``: each worker traces the records it ingests (and
    reads, acks, commits) into ``DIR/<pid>.trace``."""
    import asyncio

    from gridwatch.commands.worker import scaleout_for
    from gridwatch.config import load_config
    from stream import faust_app
    from stream.faust_app import TOPIC_DETECTIONS, ScaleoutSettings, trace
    from tests.builders import line
    from tests.stream.test_packing import Event, Recorder
    from ticketing.store import SqliteTicketStore

    monkeypatch.setenv("GRIDWATCH_KAFKA_TRACE", str(tmp_path / "trace"))
    try:
        scaleout = scaleout_for(ScaleoutSettings(partitions=4), load_config(), make_grid(),
                                SqliteTicketStore(tmp_path / "t.sqlite3"),
                                sender=Recorder(), received=None)
        asyncio.run(scaleout.ingest_batch([Event(TOPIC_DETECTIONS, 1, 7,
                                                 line(event_id="traced").encode(),
                                                 acked=[])]))
        for handler in trace.handlers:
            handler.flush()
        text = (tmp_path / "trace" / f"{os.getpid()}.trace").read_text()
        assert "ingest in=1@7 eid=traced cell=C00" in text
    finally:
        for handler in list(trace.handlers):
            if isinstance(handler, logging.FileHandler):
                trace.removeHandler(handler)
                handler.close()
        faust_app._tracing = False
