"""``gridwatch serve``: the centre on one box — MQTT ingest + embedded pipeline + the API.

Subscribes to ``gridwatch/v1/+/+/detection`` with a persistent session, feeds valid
detections through stream → ticketing into SQLite (or ``ticketing.storage_url``),
dead-letters the rest to ``gridwatch/v1/deadletter``, keeps the camera snapshots sent on
``gridwatch/v1/+/+/evidence`` (``evidence:`` settings; a folder beside the database by
default) and serves the ticketing API, ``/evidence/...`` included, with uvicorn.
Prometheus metrics are at ``/metrics``: on the API port for a caller with a token that
reads everything (admin, operator, supervisor, integrator), and, with ``--metrics-port``,
without a token on a listener of their own that binds only to loopback.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gridwatch.errors import UserError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="run the centre: MQTT ingest, pipeline, ticketing API")
    parser.add_argument("--grid", required=True, help="grid GeoJSON (cells with cell_id)")
    parser.add_argument("--config", help="YAML merged over configs/default.yaml")
    parser.add_argument("--db", default="gridwatch-data/tickets.db",
                        help="SQLite ticket store, unless $GRIDWATCH_TICKETS_URL or "
                             "ticketing.storage_url is set (default: %(default)s); named "
                             "accounts (gridwatch users) live in the same database")
    parser.add_argument("--mqtt-url", default="mqtt://127.0.0.1:1883",
                        help="broker (mqtt://host:port or mqtts://host:port; "
                             "default: %(default)s)")
    parser.add_argument("--mqtt-username", help="broker user name")
    parser.add_argument("--mqtt-password-env", metavar="VAR",
                        help="environment variable that holds the broker password")
    parser.add_argument("--mqtt-ca-file", help="CA bundle for mqtts:// (default: system CAs)")
    parser.add_argument("--mqtt-reconnect-min-s", type=int, default=1, metavar="S",
                        help="first wait before reconnecting to a lost broker "
                             "(default: %(default)s)")
    parser.add_argument("--mqtt-reconnect-max-s", type=int, default=2, metavar="S",
                        help="the wait doubles up to this while the broker stays away, so "
                             "the centre is back within this many seconds of the broker's "
                             "return (default: %(default)s)")
    parser.add_argument("--client-id", default="gridwatch-centre-ingest",
                        help="MQTT client id of the persistent session (default: %(default)s)")
    parser.add_argument("--no-mqtt", action="store_true", help="API only, no MQTT ingest")
    parser.add_argument("--mqtt-share-group", metavar="NAME",
                        help="several replicas: subscribe as members of the shared "
                             "subscription $share/NAME/... (each its own --client-id); the "
                             "broker splits the stations' messages between them")
    parser.add_argument("--ingest-thread", action="store_true",
                        help="run the MQTT client in a thread of this process instead of a "
                             "child process of its own (slower: it shares a core with the "
                             "pipeline and the API)")
    parser.add_argument("--host", default="127.0.0.1", help="API address (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8080, help="API port (default: %(default)s)")
    parser.add_argument("--metrics-port", type=int, default=0, metavar="PORT",
                        help="also serve /metrics without a token on this port, bound to "
                             "--metrics-host (default: off; /metrics on the API port needs "
                             "a token)")
    parser.add_argument("--metrics-host", default="127.0.0.1",
                        help="loopback address of the --metrics-port listener "
                             "(default: %(default)s)")
    parser.set_defaults(func=run)


def mqtt_connection(args: argparse.Namespace) -> Any:
    """The broker connection from the command line (password from the environment)."""
    from configs.mqtt import MqttConnection, TlsSettings, make_client

    parts = urlsplit(args.mqtt_url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise UserError(f"--mqtt-url: expected mqtt://host:port or mqtts://host:port, "
                        f"got {args.mqtt_url!r}")
    tls = TlsSettings(enabled=parts.scheme == "mqtts",
                      ca_file=Path(args.mqtt_ca_file) if args.mqtt_ca_file else None)
    low, high = args.mqtt_reconnect_min_s, args.mqtt_reconnect_max_s
    if not 1 <= low <= high:
        raise UserError(f"--mqtt-reconnect-min-s and --mqtt-reconnect-max-s: expected whole "
                        f"seconds with 1 <= min <= max, got {low} and {high}")
    conn = MqttConnection(host=parts.hostname,
                          port=parts.port or (8883 if parts.scheme == "mqtts" else 1883),
                          username=args.mqtt_username, password_env=args.mqtt_password_env,
                          tls=tls, reconnect_min_s=low, reconnect_max_s=high)
    conn.password()  # a missing secret fails now with its variable name
    make_client(conn, client_id="gridwatch-preflight")  # so do unreadable TLS files
    return conn


class PipelineCollector:
    """Exports :meth:`EmbeddedPipeline.stats` at scrape time."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        stats = self.pipeline.stats()
        yield GaugeMetricFamily("gridwatch_pipeline_queue_depth",
                                "Detections accepted but not yet in the ticket store",
                                value=stats.get("queue_depth", 0))
        yield CounterMetricFamily("gridwatch_pipeline_processed",
                                  "Detections written through to the ticket store",
                                  value=stats.get("processed", 0))
        yield CounterMetricFamily("gridwatch_pipeline_failed",
                                  "Detections whose batch failed (redelivered later)",
                                  value=stats.get("failed", 0))
        yield CounterMetricFamily("gridwatch_pipeline_store_errors",
                                  "Failed attempts to write a batch to the ticket store "
                                  "(retried with back-off; intake waits meanwhile)",
                                  value=stats.get("store_errors", 0))
        yield CounterMetricFamily("gridwatch_pipeline_tickets_opened", "Tickets opened",
                                  value=stats.get("tickets_opened", 0))
        refused = CounterMetricFamily("gridwatch_pipeline_refused", "Detections the ticket "
                                      "store refused for good (dead-lettered; the rest of "
                                      "their batch committed)", labels=["code"])
        for code, value in stats.get("refused_by_code", {}).items():
            refused.add_metric([code], value)
        yield refused
        skew = CounterMetricFamily("gridwatch_pipeline_clock_skew", "Detections dead-lettered "
                                   "as clock_skew (observed_at too far from the centre's "
                                   "clock), per source", labels=["station", "source"])
        for key, value in stats.get("clock_skew_by_source", {}).items():
            station, _, source = key.partition("/")
            skew.add_metric([station, source], value)
        yield skew


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    import uvicorn

    from geo.grid import Grid, GridError
    from gridwatch.config import load_config
    from gridwatch.embedded import EmbeddedPipeline
    from gridwatch.ingest import IngestMetrics, MqttIngest
    from gridwatch.metrics_http import MetricsListener, api_metrics_endpoint, is_loopback
    from ticketing.api.app import create_app
    from ticketing.deliveries import DeliveryTargets
    from ticketing.evidence import EvidenceStore
    from ticketing.store import configured_url, open_store

    config = load_config(args.config)
    try:
        grid = Grid.from_file(args.grid)
    except (OSError, GridError) as exc:
        raise UserError(f"{args.grid}: {exc}") from None
    connection = None if args.no_mqtt else mqtt_connection(args)
    if args.metrics_port and not is_loopback(args.metrics_host):
        raise UserError(f"--metrics-host: the metrics listener binds only to loopback "
                        f"(127.0.0.1, ::1, localhost), got {args.metrics_host!r}; from "
                        f"other hosts scrape /metrics on the API port with a bearer token")
    if not 0 <= args.metrics_port <= 65535:
        raise UserError(f"--metrics-port: expected 0 (off) or a port up to 65535, got "
                        f"{args.metrics_port}")
    metrics = IngestMetrics()
    listener = None
    if args.metrics_port:
        listener = MetricsListener(metrics.registry, host=args.metrics_host,
                                   port=args.metrics_port)
        try:
            listener.start()
        except OSError as exc:
            raise UserError(f"--metrics-port {args.metrics_port}: cannot listen on "
                            f"{args.metrics_host}: {exc} (each replica on a host needs its "
                            f"own --metrics-port)") from None
        log.info("serve: metrics at http://%s:%s/metrics", args.metrics_host, listener.port)
    webhooks = DeliveryTargets.from_settings(config.ticketing)  # the centre's and departments'
    # $GRIDWATCH_TICKETS_URL wins (as documented), so replicas configured through the
    # environment share one store instead of each opening its own --db file
    url = configured_url(config.ticketing.storage_url, default=args.db)
    if "://" not in url:
        Path(url).parent.mkdir(parents=True, exist_ok=True)
    store = open_store(url, webhooks=webhooks)
    # live: a detection whose clock is far from the centre's is dead-lettered (clock_skew)
    pipeline = EmbeddedPipeline(config, grid, store, skew_clock=lambda: datetime.now(UTC),
                                shared_store=args.mqtt_share_group is not None)
    # the embedded default puts evidence beside the SQLite file in use (``evidence:``
    # names a folder for a PostgreSQL store; else it goes beside --db)
    sqlite_file = (url if "://" not in url else url.removeprefix("sqlite:///")
                   if url.startswith("sqlite:///") else args.db)
    evidence = EvidenceStore.beside(store, sqlite_file, config.evidence)
    metrics.registry.register(PipelineCollector(pipeline))  # type: ignore[arg-type]
    ingest = None
    if connection is not None:
        try:
            ingest = MqttIngest(connection, pipeline, client_id=args.client_id,
                                metrics=metrics, isolate=not args.ingest_thread,
                                evidence=evidence, share_group=args.mqtt_share_group)
        except ValueError as exc:  # a share group name MQTT cannot carry
            raise UserError(f"--mqtt-share-group: {exc}") from None
    try:
        app = create_app(store=store, settings=config.ticketing, policies=config.policies,
                         grid=grid, run_workers=True, evidence=evidence)
    except ValueError as exc:  # e.g. a webhook's HMAC key missing from the environment
        raise UserError(str(exc)) from None

    app.add_route("/metrics", api_metrics_endpoint(metrics.registry), methods=["GET"])
    if ingest is not None and connection is not None:
        ingest.start()
        log.info("serve: ingesting %s from %s:%s as %s", ingest.detection_filter,
                 connection.host, connection.port, args.client_id)
    # uvicorn shuts down on SIGTERM, restores the handler it found and raises the signal
    # again: with the default handler the process would die there, before the finally
    # below commits what is queued; this handler makes that a normal exit
    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    print(f"console: http://{args.host}:{args.port}/  (sign in with a `gridwatch users` "
          f"account); API: http://{args.host}:{args.port}/tickets", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        signal.signal(signal.SIGTERM, previous)
        # stop receiving first; what is still queued is committed by close(), and anything
        # received but not acknowledged is redelivered to the next run (dropped by event id)
        if ingest is not None:
            ingest.stop()
        if listener is not None:
            listener.stop()
        pipeline.close()
        store.close()
    return 0
