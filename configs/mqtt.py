"""One MQTT broker connection: its settings and the one paho client factory.

The edge box (uplink to the centre, its local sensor broker) and the centre (ingest, the
MQTT link process, start-up checks) connect the same way, so both import this module::

    conn = MqttConnection(host="centre.example.org", port=8883, username="st-07",
                          password_env="GRIDWATCH_MQTT_PASSWORD", tls=TlsSettings(enabled=True))
    client = make_client(conn, client_id="st-07-uplink")   # credentials, TLS, back-off set
    client.connect(conn.host, conn.port, keepalive=conn.keepalive_s)

The password is never in a file: ``password_env`` names the environment variable. A TLS
file that cannot be loaded is a :class:`~configs.reader.ConfigFileError` naming it.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from pathlib import Path
from typing import Annotated, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel, ConfigDict, Field

from configs.reader import ConfigFileError

logger = logging.getLogger(__name__)

Seconds = Annotated[float, Field(gt=0, le=30 * 86400)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsSettings(_Strict):
    """TLS to the broker. ``ca_file`` unset with ``enabled`` uses the system CAs."""

    enabled: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    insecure: bool = False  # skip hostname verification (test rigs only)


class MqttConnection(_Strict):
    """One MQTT broker connection. The password comes from the env var ``password_env``."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: str | None = None
    username: str | None = None
    password_env: str | None = None
    tls: TlsSettings = TlsSettings()
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    reconnect_min_s: Seconds = 1.0
    reconnect_max_s: Seconds = 60.0

    def password(self) -> str | None:
        """The password from the environment (``None`` when no ``password_env``)."""
        if self.password_env is None:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigFileError(
                f"MQTT password: environment variable {self.password_env} is not set "
                f"(named by password_env for {self.host}:{self.port})"
            )
        return value


def make_client(conn: MqttConnection, *, client_id: str, clean_session: bool = True,
                manual_ack: bool = False,
                client_class: type[mqtt.Client] = mqtt.Client) -> mqtt.Client:
    """A paho client (``client_class``, a subclass of paho's) with the connection's
    credentials, TLS and back-off applied."""
    client = client_class(CallbackAPIVersion.VERSION2, client_id=client_id,
                          clean_session=clean_session, protocol=mqtt.MQTTv311,
                          manual_ack=manual_ack)
    if conn.username is not None:
        client.username_pw_set(conn.username, conn.password())
    if conn.tls.enabled:
        tls = conn.tls
        try:
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        except (OSError, ssl.SSLError) as exc:
            files = ", ".join(f"{name} {path}" for name, path in (
                ("ca_file", tls.ca_file), ("cert_file", tls.cert_file),
                ("key_file", tls.key_file)) if path is not None)
            raise ConfigFileError(f"MQTT TLS for {conn.host}:{conn.port}: cannot load "
                                  f"{files or 'the system CAs'}: {exc}") from None
        client.tls_insecure_set(conn.tls.insecure)
    client.reconnect_delay_set(min_delay=max(1, int(conn.reconnect_min_s)),
                               max_delay=max(1, int(conn.reconnect_max_s)))
    client.on_connect_fail = lambda c, userdata: logger.warning(
        "MQTT client %s: cannot connect to %s:%s: %s; retrying with back-off", client_id,
        conn.host, conn.port, connect_failure())
    return client


def connect_failure() -> str:
    """Why paho's last connection attempt failed, for an ``on_connect_fail`` callback.

    paho retries a failed connect (refused, TLS verification, unreachable) silently and
    passes the callback no reason; it calls it inside its ``except OSError``, so the
    exception is still the one being handled.
    """
    exc = sys.exc_info()[1]
    if exc is None:
        return "no reason given"
    return str(exc) or type(exc).__name__


# CONNACK refusals about credentials (MQTT 3.1.1 return codes 4 and 5, as paho's
# MQTT 5 reason codes): "Bad user name or password", "Not authorized"
_CREDENTIALS_REFUSED = (0x86, 0x87)


def refusal_hint(conn: MqttConnection, reason: Any) -> str:
    """What to check when the broker refuses the credentials (else ``""``)."""
    if getattr(reason, "value", None) not in _CREDENTIALS_REFUSED:
        return ""
    if conn.username is None:
        return " (no username is configured)"
    where = f"${conn.password_env}" if conn.password_env else "no password_env"
    return f" (check username {conn.username!r} and the password: {where})"
