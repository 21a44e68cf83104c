"""configs/mqtt.py: one broker connection's settings and the one paho client factory."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from configs.mqtt import (
    MqttConnection,
    TlsSettings,
    connect_failure,
    make_client,
    refusal_hint,
)
from configs.reader import ConfigFileError


def test_the_password_comes_from_the_named_environment_variable(monkeypatch) -> None:
    conn = MqttConnection(host="broker", port=8883, username="st-07",
                          password_env="GW_TEST_MQTT_PASSWORD")
    monkeypatch.setenv("GW_TEST_MQTT_PASSWORD", "s3cret")
    assert conn.password() == "s3cret"
    monkeypatch.delenv("GW_TEST_MQTT_PASSWORD")
    with pytest.raises(ConfigFileError, match="environment variable GW_TEST_MQTT_PASSWORD is "
                                              r"not set \(named by password_env for broker:8883\)"):
        conn.password()
    assert MqttConnection().password() is None


@pytest.mark.parametrize(("fields", "error"), [
    ({"port": 0}, "port"),
    ({"keepalive_s": 1}, "keepalive_s"),
    ({"password": "in-the-file"}, "password"),  # secrets never come from a file
    ({"tls": {"enabled": True, "ca": "x.pem"}}, "tls.ca"),
])
def test_bad_connection_settings_name_the_field(fields: dict, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        MqttConnection.model_validate(fields)


def test_an_unreadable_tls_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "ca.pem"
    conn = MqttConnection(host="broker", port=8883,
                          tls=TlsSettings(enabled=True, ca_file=missing))
    with pytest.raises(ConfigFileError, match=f"MQTT TLS for broker:8883: cannot load "
                                              f"ca_file {missing}"):
        make_client(conn, client_id="t")


@pytest.mark.parametrize(("reason", "fields", "hint"), [
    (0x86, {"username": "st-07", "password_env": "PW"},
     " (check username 'st-07' and the password: $PW)"),
    (0x87, {"username": "st-07"}, " (check username 'st-07' and the password: no password_env)"),
    (0x86, {}, " (no username is configured)"),
    (0x80, {"username": "st-07"}, ""),  # not about credentials
])
def test_a_credentials_refusal_says_what_to_check(reason: int, fields: dict,
                                                  hint: str) -> None:
    assert refusal_hint(MqttConnection(**fields), SimpleNamespace(value=reason)) == hint


def test_connect_failure_reports_the_exception_being_handled() -> None:
    assert connect_failure() == "no reason given"
    try:
        raise ConnectionRefusedError("[Errno 111] Connection refused")
    except OSError:
        assert connect_failure() == "[Errno 111] Connection refused"


@pytest.mark.services
def test_a_made_client_talks_to_a_real_broker(mqtt_url: str) -> None:
    parts = urlsplit(mqtt_url)
    conn = MqttConnection(host=parts.hostname or "127.0.0.1", port=parts.port or 1883)
    topic = f"gridwatch-test/{uuid.uuid4().hex}"
    got: list[bytes] = []
    subscribed, received = threading.Event(), threading.Event()
    client = make_client(conn, client_id=f"t-{uuid.uuid4().hex[:8]}")
    client.on_subscribe = lambda *args: subscribed.set()
    client.on_message = lambda c, u, message: (got.append(message.payload), received.set())
    client.connect(conn.host, conn.port, keepalive=conn.keepalive_s)
    client.loop_start()
    try:
        client.subscribe(topic, qos=1)
        assert subscribed.wait(10)
        client.publish(topic, b"hello", qos=1).wait_for_publish(10)
        assert received.wait(10)
        assert got == [b"hello"]
    finally:
        client.loop_stop()
        client.disconnect()
