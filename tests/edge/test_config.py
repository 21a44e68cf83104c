"""station.yaml: the documented example loads; mistakes name the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from configs.reader import ConfigFileError
from edge.config import CameraSource, load_station_config

EXAMPLE = Path(__file__).resolve().parents[2] / "configs" / "station.example.yaml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_example_loads_and_resolves_paths() -> None:
    config = load_station_config(EXAMPLE)
    assert config.station_id == "st-guicheng-07"
    assert config.state_dir.is_absolute()
    assert {s.type for s in config.sources} == {
        "zigbee2mqtt_smoke", "mqtt_json_smoke", "access_control"}


def test_camera_config_path_is_relative_to_the_station_file(tmp_path: Path) -> None:
    path = write(tmp_path, "station_id: s1\nsources:\n"
                 "  - {type: camera, id: c1, url: '0', camera_config: cams/c1.yaml,"
                 " lon: 1, lat: 2}\n")
    (cam,) = load_station_config(path).sources
    assert isinstance(cam, CameraSource)
    assert cam.camera_config == tmp_path / "cams" / "c1.yaml"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("station_id: s1\nuplnk: {}\n", "uplnk: Extra inputs are not permitted"),
        ("station_id: s1\nsources:\n  - {type: zigbee2mqtt_smok, id: a, lon: 1, lat: 1}\n",
         "sources.0: Input tag 'zigbee2mqtt_smok'"),
        ("station_id: s1\nsources:\n  - {type: access_control, id: d, lon: 1, lat: 1,"
         " topic: x, held_open_limit_s: 0}\n",
         "sources.0.access_control.held_open_limit_s: Input should be greater than 0"),
        ("station_id: s1\nsources:\n  - {type: access_control, id: d, lon: 1, lat: 1}\n",
         "transport mqtt needs a topic"),
        ("station_id: s1\nsources:\n  - {type: access_control, id: d, lon: 1, lat: 1,"
         " transport: webhook}\n", "no webhook: block"),
        ("station_id: s1\nsources:\n  - {type: zigbee2mqtt_smoke, id: a, device: x, lon: 1,"
         " lat: 1}\n  - {type: zigbee2mqtt_smoke, id: a, device: y, lon: 1, lat: 1}\n",
         "source id 'a' is used twice"),
        ("station_id: s1\nuplink: {max_inflight: 70000}\n",
         "uplink.max_inflight: Input should be less than or equal to 20000"),
        ("station_id: s1\nsources:\n  - {type: zigbee2mqtt_smoke, id: a, device: x, lon: 200,"
         " lat: 1}\n", "sources.0.zigbee2mqtt_smoke.lon"),
        ("station_id: [\n", "invalid YAML"),
    ],
)
def test_errors_name_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigFileError) as err:
        load_station_config(path)
    assert str(path) in str(err.value)
    assert message in str(err.value)


def test_password_comes_from_the_environment(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "station_id: s1\nuplink: {username: u, password_env: GW_TEST_PW}\n")
    config = load_station_config(path)
    monkeypatch.delenv("GW_TEST_PW", raising=False)
    with pytest.raises(ConfigFileError, match="GW_TEST_PW is not set"):
        config.uplink.password()
    monkeypatch.setenv("GW_TEST_PW", "s3cret")
    assert config.uplink.password() == "s3cret"
    assert "s3cret" not in config.model_dump_json()


@pytest.mark.parametrize(("host", "token_env", "ok"), [
    ("127.0.0.1", None, True),
    ("::1", None, True),
    ("localhost", None, True),
    ("0.0.0.0", None, False),
    ("192.168.1.20", None, False),
    ("door-gw.local", None, False),
    ("0.0.0.0", "GRIDWATCH_WEBHOOK_TOKEN", True),
])
def test_a_webhook_off_loopback_needs_a_token(tmp_path: Path, host: str,
                                             token_env: str | None, ok: bool) -> None:
    token = f", token_env: {token_env}" if token_env else ""
    path = write(tmp_path, f"station_id: s1\nwebhook: {{host: '{host}', port: 8088{token}}}\n")
    if ok:
        assert load_station_config(path).webhook.host == host  # type: ignore[union-attr]
    else:
        with pytest.raises(ConfigFileError, match=r"webhook: .*set token_env"):
            load_station_config(path)
