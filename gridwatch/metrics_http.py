"""``/metrics`` for Prometheus, never open to anyone who can reach the API port.

Two ways in (``gridwatch serve``):

- on the API port, ``GET /metrics`` with ``Authorization: Bearer <token>`` of a caller that
  reads everything (admin, operator, supervisor, integrator: an environment token such as
  ``GRIDWATCH_API_TOKENS=integrator:...`` or a person's API token); 401 without one, 403
  for a department or ingest token;
- with ``--metrics-port``, a listener of its own that answers ``GET /metrics`` without a
  token and binds only to a loopback address (a Prometheus or an agent on the same box).

The metrics name stations and sources and count what each sent, which is why neither way
answers an anonymous caller from the network.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP address (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def api_metrics_endpoint(registry: CollectorRegistry) -> Any:
    """A Starlette endpoint for the API app: the metrics for a caller that reads everything.

    It runs in the threadpool (a plain function): a person's token is looked up in the
    database."""
    from ticketing.api.deps import token_principal

    def metrics(request: Request) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        state = request.app.state.gridwatch
        principal = token_principal(state, token.strip()) if scheme.lower() == "bearer" \
            else None
        if principal is None:
            return JSONResponse(
                {"detail": "GET /metrics needs Authorization: Bearer <token> of an admin, "
                           "operator, supervisor or integrator (or use serve --metrics-port "
                           "on loopback)"},
                status_code=401, headers={"WWW-Authenticate": "Bearer"})
        if not principal.sees_all:
            return JSONResponse(
                {"detail": f"role {principal.role.value} may not read metrics (expected "
                           f"one of: admin, integrator, operator, supervisor)"},
                status_code=403)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return metrics


class MetricsListener:
    """``GET /metrics`` on a loopback address, in a thread of this process.

    Args:
        registry: what to export.
        host: a loopback address; anything else is a ``ValueError`` (the API port with a
            token is the way in from elsewhere).
        port: the port; 0 picks a free one (see :attr:`port` after :meth:`start`).

    Example:
        >>> listener = MetricsListener(registry, port=9109); listener.start()
        >>> ...; listener.stop()
    """

    def __init__(self, registry: CollectorRegistry, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        if not is_loopback(host):
            raise ValueError(f"the metrics listener binds only to loopback (127.0.0.1, ::1, "
                             f"localhost), got {host!r}; from other hosts scrape /metrics "
                             f"on the API port with a bearer token")
        if not 0 <= port <= 65535:
            raise ValueError(f"expected a port in 0..65535, got {port}")
        self.registry = registry
        self.host = host
        self.port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Bind and serve. Raises OSError when the port is taken."""
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path.split("?", 1)[0] != "/metrics":
                    self._reply(404, b"only /metrics here\n", "text/plain; charset=utf-8")
                    return
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("metrics listener: " + format, *args)

        server_class = ThreadingHTTPServer
        if ":" in self.host:
            import socket

            class V6Server(ThreadingHTTPServer):
                address_family = socket.AF_INET6

            server_class = V6Server
        self._server = server_class((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="gridwatch-metrics")
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
