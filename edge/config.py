"""The root config of an edge agent (``station.yaml``): one pydantic model, ``extra="forbid"``.

Everything the agent does comes from here and is passed into constructors. Secrets (the
MQTT password) are never written in the file: the file names an environment variable
(``password_env``) and the agent reads it at start-up. Errors name the file and the field
path, e.g. ``station.yaml: sources.2.held_open_limit_s: Input should be greater than 0``.

Example (``configs/station.example.yaml`` is the documented version)::

    station_id: st-guicheng-07
    state_dir: /var/lib/gridwatch-edge
    uplink: {host: centre.example.org, port: 8883, tls: {enabled: true}}
    sources:
      - {type: zigbee2mqtt_smoke, id: smoke-b3-2f, device: b3_2f_smoke, lon: 113.15, lat: 23.03}
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from configs.mqtt import MqttConnection
from configs.reader import read_yaml_mapping, validate_config

Seconds = Annotated[float, Field(gt=0, le=30 * 86400)]
Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
Lon = Annotated[float, Field(ge=-180.0, le=180.0)]
Lat = Annotated[float, Field(ge=-90.0, le=90.0)]

# paho-mqtt keeps QoS 1 messages in memory only and message ids wrap at 65,535; a window
# well below that keeps every in-flight message addressable and the memory bounded.
MAX_INFLIGHT_LIMIT = 20_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UplinkSettings(MqttConnection):
    """The connection to the centre's broker, plus the publisher's flow control.

    ``receipts`` (default on): a message leaves the outbox only when the centre's receipt
    says it was committed or dead-lettered, not on the broker's PUBACK. One that stays
    unreceipted ``receipt_timeout_s`` after its PUBACK is sent again, the wait doubling per
    attempt up to ``receipt_timeout_max_s`` (see ``docs/edge.md``, "Delivery guarantees").
    Turn it off only for a centre too old to send receipts.
    """

    max_inflight: Annotated[int, Field(ge=1, le=MAX_INFLIGHT_LIMIT)] = 1000
    topic_prefix: str = "gridwatch/v1"
    receipts: bool = True
    receipt_timeout_s: Seconds = 120.0
    receipt_timeout_max_s: Seconds = 3600.0

    @model_validator(mode="after")
    def _timeouts_in_order(self) -> UplinkSettings:
        if self.receipt_timeout_max_s < self.receipt_timeout_s:
            raise ValueError(f"receipt_timeout_max_s ({self.receipt_timeout_max_s}) must be "
                             f">= receipt_timeout_s ({self.receipt_timeout_s})")
        return self


class OutboxSettings(_Strict):
    """The durable SQLite outbox. ``when_full`` is the disk-budget policy.

    - ``drop_oldest`` (default): make room by deleting the oldest self-tests first, then the
      oldest detections; the newest alarms always get in.
    - ``reject_new``: keep what is queued, refuse the new detection.
    Either way ``gridwatch_edge_outbox_dropped_total`` counts every detection lost.
    """

    max_bytes: Annotated[int, Field(ge=64 * 1024)] = 256 * 1024 * 1024
    when_full: Literal["drop_oldest", "reject_new"] = "drop_oldest"
    # "normal" survives a crash of the process (kill -9); "full" also a power cut.
    synchronous: Literal["normal", "full"] = "normal"


class AlarmSettings(_Strict):
    """Alarm semantics of one sensor (defaults; each source may override)."""

    reaffirm_s: Seconds = 300.0  # re-send while the alarm stays active
    debounce_s: Seconds = 30.0  # an alarm that clears and returns within this is one alarm
    stuck_after_s: Seconds | None = 3600.0  # in alarm this long: report sensor_stuck
    silent_after_s: Seconds | None = 7200.0  # no message this long: report sensor_silent


class Z2mSmokeSource(_Strict):
    """A Zigbee2MQTT smoke sensor: ``<base_topic>/<device>`` with ``smoke``, ``test`` ..."""

    type: Literal["zigbee2mqtt_smoke"]
    id: Identifier
    lon: Lon
    lat: Lat
    device: str = Field(min_length=1)
    base_topic: str = "zigbee2mqtt"
    alarm: AlarmSettings | None = None

    @property
    def topic(self) -> str:
        return f"{self.base_topic}/{self.device}"


class JsonMapping(_Strict):
    """Where another vendor's JSON keeps the alarm fields (dotted paths, e.g. ``state.fire``).

    A field matches when its value is in the matching ``*_values`` list (case-insensitive
    for strings); a missing field means "not reported", not "false".
    """

    alarm_field: str = "alarm"
    alarm_values: list[Any] = Field(default_factory=lambda: [True, 1, "alarm", "on", "fire"])
    test_field: str | None = "test"
    test_values: list[Any] = Field(default_factory=lambda: [True, 1, "test"])
    battery_low_field: str | None = None
    tamper_field: str | None = None


class JsonSmokeSource(_Strict):
    """A smoke sensor on any MQTT topic, decoded through a :class:`JsonMapping`."""

    type: Literal["mqtt_json_smoke"]
    id: Identifier
    lon: Lon
    lat: Lat
    topic: str = Field(min_length=1)
    mapping: JsonMapping = JsonMapping()
    alarm: AlarmSettings | None = None


class DoorMapping(_Strict):
    """How a controller names its events (field ``event_field``, values per event)."""

    event_field: str = "event"
    forced: list[str] = Field(default_factory=lambda: ["forced", "door_forced", "forced_open"])
    opened: list[str] = Field(default_factory=lambda: ["open", "opened", "door_open"])
    closed: list[str] = Field(default_factory=lambda: ["close", "closed", "door_closed"])
    invalid_card: list[str] = Field(
        default_factory=lambda: ["invalid_card", "card_denied", "access_denied"])
    test_field: str | None = "test"


class InvalidCardBurst(_Strict):
    """``count`` invalid cards within ``window_s`` are one ``invalid_card_burst``."""

    count: Annotated[int, Field(ge=2)] = 5
    window_s: Seconds = 60.0


class AccessControlSource(_Strict):
    """A door controller, over MQTT (``topic``) or the agent's HTTP webhook."""

    type: Literal["access_control"]
    id: Identifier
    lon: Lon
    lat: Lat
    transport: Literal["mqtt", "webhook"] = "mqtt"
    topic: str | None = None
    mapping: DoorMapping = DoorMapping()
    held_open_limit_s: Seconds = 120.0
    invalid_card_burst: InvalidCardBurst = InvalidCardBurst()
    reaffirm_s: Seconds = 300.0
    debounce_s: Seconds = 10.0
    silent_after_s: Seconds | None = None

    @model_validator(mode="after")
    def _topic_for_mqtt(self) -> AccessControlSource:
        if self.transport == "mqtt" and not self.topic:
            raise ValueError("transport mqtt needs a topic")
        return self


class CameraSource(_Strict):
    """A camera: frames read with OpenCV, run through ``detectors.camera.CameraPipeline``.

    ``camera_config`` is the detectors' own camera YAML (plug-ins, ground mapping, lanes),
    relative paths resolved against the station file; its ``station_id``/``source_id`` must
    be this station's and this source's ids.

    ``url`` is a live stream (``rtsp://``, ``http(s)://``: event time is the wall clock at
    read), a USB device index (``"0"``, also live), or a video file path (relative to the
    station file). A file's frame ``i`` is observed at ``start + i / fps`` (``start`` here,
    else the camera YAML's ``start``, else 2026-01-01T08:00:00+08:00), so a file gives the
    same detections on every run.
    """

    type: Literal["camera"]
    id: Identifier
    lon: Lon
    lat: Lat
    url: str = Field(min_length=1)  # rtsp://..., a device index ("0") or a video file
    camera_config: Path
    max_fps: Annotated[float, Field(gt=0, le=60)] = 5.0  # frames handed to the detectors
    frame_queue: Annotated[int, Field(ge=1, le=64)] = 2  # drop-oldest buffer between threads
    # Files only. realtime: played at their own frame rate, like a camera (a slow detector
    # loses the oldest queued frames); fast: as fast as the detectors take them, no frame
    # lost (tests, back-filling recorded video).
    file_pace: Literal["realtime", "fast"] = "realtime"
    loop_file: bool = False  # at the end of a file: start again (demos) instead of stopping
    start: AwareDatetime | None = None  # files only: event time of the first frame
    reopen_min_s: Seconds = 1.0  # back-off between attempts to open the camera ...
    reopen_max_s: Seconds = 60.0  # ... doubling up to this

    @property
    def is_file(self) -> bool:
        """A video file rather than a live stream or a device index."""
        return "://" not in self.url and not self.url.isdigit()

    @model_validator(mode="after")
    def _backoff_order(self) -> CameraSource:
        if self.reopen_min_s > self.reopen_max_s:
            raise ValueError(f"reopen_min_s ({self.reopen_min_s}) must not exceed "
                             f"reopen_max_s ({self.reopen_max_s})")
        return self


SourceConfig = Annotated[
    Z2mSmokeSource | JsonSmokeSource | AccessControlSource | CameraSource,
    Field(discriminator="type"),
]


class WebhookSettings(_Strict):
    """The HTTP webhook for door controllers: ``POST /webhook/<source_id>`` with JSON.

    It listens on loopback by default. Bound to any other address (door controllers on
    the station's LAN) it must require a bearer token: ``token_env`` names the
    environment variable that holds it, or the config is refused at start-up."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8088
    token_env: str | None = None  # if set, require ``Authorization: Bearer <value>``

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebhookSettings:
        if self.token_env is None and not _is_loopback(self.host):
            raise ValueError(f"host {self.host!r} is reachable from other machines: set "
                             f"token_env (an environment variable holding the bearer "
                             f"token door controllers must send) or bind to 127.0.0.1")
        return self


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class EvidenceSettings(_Strict):
    """Camera snapshots sent to the centre (``gridwatch/v1/<station>/<source>/evidence``).

    A detection whose ``evidence.snapshot_url`` is a ``file://`` JPEG/PNG written by its
    camera (the camera YAML's ``snapshot_dir``) gets that image committed to the outbox
    in the same transaction as the detection, and sent after it.
    """

    send: bool = True
    # larger images are not sent (logged, counted in gridwatch_edge_evidence_skipped_total);
    # keep it at or below the centre's evidence.max_item_bytes
    max_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 2 * 1024 * 1024
    # delete the camera's JPEG once the outbox holds it (the outbox is the durable copy)
    keep_local: bool = False


class MetricsSettings(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9108  # 0 turns the endpoint off


class ClockSettings(_Strict):
    """The edge's check of its sources' clocks before anything is sent: a detection
    observed more than ``max_future_s`` ahead of this box's clock (or, when set, more
    than ``max_age_s`` behind it) is not sent; it is counted per source
    (``gridwatch_edge_clock_skew_total{source}``, ``gridwatch edge status``) and logged.
    The centre applies its own limits again (``stream.max_future_s`` / ``max_age_s``,
    dead letter ``clock_skew``)."""

    max_future_s: Seconds = 300.0
    # off by default: a camera replaying a file, or a backlog, is legitimately old
    max_age_s: Seconds | None = None


class StationConfig(_Strict):
    """Everything one edge agent needs (the root of ``station.yaml``)."""

    station_id: Identifier
    state_dir: Path = Path("./edge-state")
    uplink: UplinkSettings = UplinkSettings()
    local_mqtt: MqttConnection = MqttConnection()
    outbox: OutboxSettings = OutboxSettings()
    evidence: EvidenceSettings = EvidenceSettings()
    alarm: AlarmSettings = AlarmSettings()
    webhook: WebhookSettings | None = None
    metrics: MetricsSettings = MetricsSettings()
    clock: ClockSettings = ClockSettings()
    tick_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    sources: list[SourceConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> StationConfig:
        seen: set[str] = set()
        for source in self.sources:
            if source.id in seen:
                raise ValueError(f"source id {source.id!r} is used twice")
            seen.add(source.id)
        needs_webhook = any(isinstance(s, AccessControlSource) and s.transport == "webhook"
                            for s in self.sources)
        if needs_webhook and self.webhook is None:
            raise ValueError("a source uses transport webhook but there is no webhook: block")
        return self

    @property
    def outbox_path(self) -> Path:
        return self.state_dir / "outbox.sqlite"

    @property
    def status_path(self) -> Path:
        return self.state_dir / "status.json"

    def alarm_for(self, source: Z2mSmokeSource | JsonSmokeSource) -> AlarmSettings:
        return source.alarm or self.alarm


def load_station_config(path: str | Path) -> StationConfig:
    """Read and validate ``station.yaml``; relative paths resolve against its folder.

    Raises:
        ConfigFileError: naming the file and the field path of every problem.
    """
    path = Path(path)
    config = validate_config(StationConfig, read_yaml_mapping(path), str(path))
    base = path.resolve().parent
    updates: dict[str, Any] = {}
    if not config.state_dir.is_absolute():
        updates["state_dir"] = base / config.state_dir
    sources = []
    for source in config.sources:
        if isinstance(source, CameraSource):
            cam_updates: dict[str, Any] = {}
            if not source.camera_config.is_absolute():
                cam_updates["camera_config"] = base / source.camera_config
            if source.is_file and not Path(source.url).is_absolute():
                cam_updates["url"] = str(base / source.url)
            if cam_updates:
                source = source.model_copy(update=cam_updates)
        sources.append(source)
    updates["sources"] = sources
    return config.model_copy(update=updates)
