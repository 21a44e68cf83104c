"""Camera reader and detector workers (``edge.sources.CameraWorkers``) on real video files.

The pipeline here is a recording stand-in, so each test controls how slow or broken the
detector is; ``tests/edge/test_agent_camera.py`` runs the real ``CameraPipeline``.
OpenCV is required (the ``vision`` extra): without it these tests fail, they never skip.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import cv2  # noqa: F401  -- a missing OpenCV must fail this module loudly
import numpy as np
import pytest

from detectors.sample import render_video, sample_scene
from detectors.schema import Detection
from edge.config import CameraSource
from edge.metrics import EdgeMetrics
from edge.sources import DEFAULT_FILE_START, CameraWorkers
from edge.workers import Workers

START = datetime.fromisoformat("2026-05-04T08:00:00+08:00")
STATION = "st-cam-test"


def make_camera(url: str | Path, **overrides: Any) -> CameraSource:
    fields: dict[str, Any] = {
        "type": "camera", "id": "cam-1", "url": str(url), "camera_config": "unused.yaml",
        "lon": 113.15, "lat": 23.04, "max_fps": 60, "file_pace": "fast", "start": START,
        "reopen_min_s": 0.05, "reopen_max_s": 0.2}
    fields.update(overrides)
    return CameraSource.model_validate(fields)


def make_video(tmp_path: Path, n_frames: int, fps: float = 10.0, name: str = "v.avi") -> Path:
    return render_video(tmp_path / name, sample_scene(), fps=fps, n_frames=n_frames)


class RecordingPipeline:
    """Stands in for ``CameraPipeline``: records each frame's time, optionally slow/broken.

    ``fail(i)`` decides whether call ``i`` raises; ``emit(i)`` whether it returns a
    detection; ``inner_errors(i)`` adds to ``stats["detector_errors"]`` (errors a real
    pipeline catches from one of its plug-ins).
    """

    def __init__(self, *, delay_s: float = 0.0,
                 fail: Callable[[int], bool] = lambda i: False,
                 emit: Callable[[int], bool] = lambda i: False,
                 inner_errors: Callable[[int], int] = lambda i: 0,
                 source_id: str = "cam-1") -> None:
        self.delay_s = delay_s
        self.fail = fail
        self.emit = emit
        self.inner_errors = inner_errors
        self.source_id = source_id
        self.seen: list[datetime] = []
        self.shapes: set[tuple[int, ...]] = set()
        self.stats = {"detector_errors": 0}
        self.closed = 0

    def process(self, frame: np.ndarray, observed_at: datetime) -> list[Detection]:
        i = len(self.seen)
        self.seen.append(observed_at)
        self.shapes.add(frame.shape)
        if self.delay_s:
            time.sleep(self.delay_s)
        self.stats["detector_errors"] += self.inner_errors(i)
        if self.fail(i):
            raise RuntimeError(f"detector broke on call {i}")
        if not self.emit(i):
            return []
        return [Detection.new(event_id=f"e{i}", observed_at=observed_at,
                              station_id="from-camera-yaml", source_id=self.source_id,
                              source_type="camera", kind="wrong_way_ebike", confidence=0.9,
                              lon=113.15, lat=23.04)]

    def close(self) -> None:
        self.closed += 1


class Rig:
    """Camera workers under real :class:`~edge.workers.Workers`, detections in a list."""

    def __init__(self, sources: list[tuple[CameraSource, RecordingPipeline]]) -> None:
        self.metrics = EdgeMetrics(STATION)
        self.sunk: list[Detection] = []
        self._lock = threading.Lock()
        self.workers = Workers(max_backoff_s=0.2)
        self.cameras: dict[str, CameraWorkers] = {}
        for source, pipeline in sources:
            cam = CameraWorkers(source, STATION, self._sink, self.metrics,
                                pipeline_factory=lambda s, p=pipeline: p)
            self.cameras[source.id] = cam
            self.workers.add(f"camera-{source.id}-reader", lambda c=cam: c.run_reader)
            self.workers.add(f"camera-{source.id}-detector", lambda c=cam: c.run_detector)

    def _sink(self, detections: list[Detection]) -> None:
        with self._lock:
            self.sunk.extend(detections)

    def wait(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.01)

    def metric(self, name: str, source: str = "cam-1") -> float:
        value = self.metrics.registry.get_sample_value(name, {"source": source})
        return value or 0.0


@pytest.fixture
def rig_factory() -> Iterator[Callable[..., Rig]]:
    rigs: list[Rig] = []

    def build(*sources: tuple[CameraSource, RecordingPipeline]) -> Rig:
        rig = Rig(list(sources))
        rig.workers.start()
        rigs.append(rig)
        return rig

    yield build
    for rig in rigs:
        rig.workers.stop(timeout_s=5)


def offsets(seen: list[datetime], start: datetime = START) -> list[float]:
    return [round((t - start).total_seconds(), 6) for t in seen]


def test_a_file_is_read_to_its_end_once_with_event_time_from_the_start(
        tmp_path: Path, rig_factory: Callable[..., Rig]) -> None:
    video = make_video(tmp_path, n_frames=20, fps=10)
    pipeline = RecordingPipeline()
    rig = rig_factory((make_camera(video), pipeline))
    cam = rig.cameras["cam-1"]
    rig.wait(lambda: cam.finished.is_set() and cam.frames_processed == 20)
    time.sleep(0.3)  # nothing more comes: the file is not re-read
    assert offsets(pipeline.seen) == [i / 10 for i in range(20)]
    assert pipeline.shapes == {(240, 320, 3)}
    assert (cam.frames_read, cam.frames_dropped, cam.errors) == (20, 0, 0)
    assert rig.metric("gridwatch_edge_camera_frames_total") == 20
    # the reader idles until stop instead of returning (which would mean a restart)
    assert rig.workers.alive() == {"camera-cam-1-reader": True,
                                      "camera-cam-1-detector": True}
    assert rig.workers.restarts() == {"camera-cam-1-reader": 0,
                                         "camera-cam-1-detector": 0}


def test_loop_file_replays_with_event_time_counting_on(
        tmp_path: Path, rig_factory: Callable[..., Rig]) -> None:
    video = make_video(tmp_path, n_frames=8, fps=10)
    pipeline = RecordingPipeline()
    rig = rig_factory((make_camera(video, loop_file=True), pipeline))
    rig.wait(lambda: len(pipeline.seen) >= 20)
    assert offsets(pipeline.seen[:20]) == [i / 10 for i in range(20)]
    assert not rig.cameras["cam-1"].finished.is_set()


def test_max_fps_thins_a_file_by_event_time(tmp_path: Path,
                                             rig_factory: Callable[..., Rig]) -> None:
    video = make_video(tmp_path, n_frames=25, fps=25)
    pipeline = RecordingPipeline()
    rig = rig_factory((make_camera(video, max_fps=10), pipeline))
    cam = rig.cameras["cam-1"]
    rig.wait(lambda: cam.finished.is_set() and cam.frames_processed == cam.frames_read)
    # 10 of 25 frames, on a 0.1 s grid: the same frames on every run
    assert offsets(pipeline.seen) == [0.0, 0.12, 0.2, 0.32, 0.4, 0.52, 0.6, 0.72, 0.8, 0.92]


def test_without_a_start_a_file_uses_the_documented_default(
        tmp_path: Path, rig_factory: Callable[..., Rig]) -> None:
    video = make_video(tmp_path, n_frames=3, fps=10)
    pipeline = RecordingPipeline()
    rig = rig_factory((make_camera(video, start=None), pipeline))
    rig.wait(lambda: len(pipeline.seen) == 3)
    assert offsets(pipeline.seen, DEFAULT_FILE_START) == [0.0, 0.1, 0.2]


def test_a_slow_detector_loses_the_oldest_frames_not_the_newest(
        tmp_path: Path) -> None:
    # A detector that is busy (here: still starting) while a camera delivers 30 frames in
    # real time into a 2-frame queue: the 28 oldest frames are dropped and counted, the
    # detector then gets the 2 newest. Deterministic: the detector waits for the reader.
    video = make_video(tmp_path, n_frames=30, fps=50)
    pipeline = RecordingPipeline()
    source = make_camera(video, file_pace="realtime", max_fps=60, frame_queue=2)
    metrics = EdgeMetrics(STATION)
    cams: list[CameraWorkers] = []

    def busy_factory(source: CameraSource) -> RecordingPipeline:
        assert cams[0].finished.wait(10)
        return pipeline

    cam = CameraWorkers(source, STATION, lambda d: None, metrics, pipeline_factory=busy_factory)
    cams.append(cam)
    stop = threading.Event()
    threads = [threading.Thread(target=cam.run_reader, args=(stop,)),
               threading.Thread(target=cam.run_detector, args=(stop,))]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while cam.frames_processed < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(5)
    assert offsets(pipeline.seen) == [0.56, 0.58]  # the newest two, in order
    assert (cam.frames_read, cam.frames_dropped, cam.frames_processed) == (30, 28, 2)
    dropped = metrics.registry.get_sample_value("gridwatch_edge_camera_frames_dropped_total",
                                                {"source": "cam-1"})
    assert dropped == 28


def test_realtime_pace_plays_a_file_at_its_own_frame_rate(
        tmp_path: Path, rig_factory: Callable[..., Rig]) -> None:
    video = make_video(tmp_path, n_frames=10, fps=20)  # 0.5 s of video
    pipeline = RecordingPipeline()
    started = time.monotonic()
    rig = rig_factory((make_camera(video, file_pace="realtime", max_fps=60), pipeline))
    rig.wait(lambda: rig.cameras["cam-1"].finished.is_set())
    assert time.monotonic() - started >= 0.4
    assert offsets(pipeline.seen) == [i / 20 for i in range(10)]


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("missing.avi", None, "no such file"),
        ("garbage.avi", b"this is not a video" * 100, "OpenCV could not open it"),
    ],
)
def test_a_camera_that_cannot_be_opened_is_retried_with_backoff_and_others_carry_on(
        tmp_path: Path, rig_factory: Callable[..., Rig], caplog: pytest.LogCaptureFixture,
        name: str, content: bytes | None, reason: str) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    broken_path = tmp_path / name
    if content is not None:
        broken_path.write_bytes(content)
    good = RecordingPipeline(emit=lambda i: i == 5, source_id="cam-ok")
    broken = RecordingPipeline()
    rig = rig_factory(
        (make_camera(broken_path, id="cam-broken", reopen_min_s=0.05, reopen_max_s=0.2),
         broken),
        (make_camera(make_video(tmp_path, n_frames=10), id="cam-ok"), good))
    cam = rig.cameras["cam-broken"]
    rig.wait(lambda: cam.open_failures >= 5)
    rig.wait(lambda: rig.cameras["cam-ok"].finished.is_set() and len(good.seen) == 10)

    assert [d.source_id for d in rig.sunk] == ["cam-ok"]
    assert rig.sunk[0].station_id == STATION
    assert broken.seen == []
    messages = [r.getMessage() for r in caplog.records if "cam-broken" in r.getMessage()]
    assert messages, "the failure was not logged"
    for message in messages[:5]:
        assert f"station {STATION} camera cam-broken: cannot open {broken_path}" in message
        assert reason in message
    waits = [m.rsplit("retrying in ", 1)[1] for m in messages[:5]]
    assert waits == ["0.05s", "0.10s", "0.20s", "0.20s", "0.20s"]  # doubling, capped
    assert rig.metric("gridwatch_edge_camera_open_failures_total", "cam-broken") >= 5
    assert all(rig.workers.alive().values())
    assert set(rig.workers.restarts().values()) == {0}


def test_a_camera_that_appears_later_is_picked_up(tmp_path: Path,
                                                  rig_factory: Callable[..., Rig]) -> None:
    video = tmp_path / "later.avi"
    pipeline = RecordingPipeline()
    rig = rig_factory((make_camera(video), pipeline))
    cam = rig.cameras["cam-1"]
    rig.wait(lambda: cam.open_failures >= 1)
    make_video(tmp_path, n_frames=5, name="tmp.avi").rename(video)
    rig.wait(lambda: cam.finished.is_set() and len(pipeline.seen) == 5)
    assert cam.open_failures >= 1  # it was retried while the file was missing ...
    assert len(pipeline.seen) == 5  # ... and read in full once it appeared
    assert set(rig.workers.restarts().values()) == {0}


def test_a_detector_exception_is_counted_and_the_worker_carries_on(
        tmp_path: Path, rig_factory: Callable[..., Rig],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge")
    video = make_video(tmp_path, n_frames=20)
    pipeline = RecordingPipeline(fail=lambda i: i % 2 == 1, emit=lambda i: i in (4, 10),
                                 inner_errors=lambda i: 1 if i == 6 else 0)
    rig = rig_factory((make_camera(video), pipeline))
    cam = rig.cameras["cam-1"]
    rig.wait(lambda: cam.finished.is_set() and cam.frames_processed == 20)

    assert len(pipeline.seen) == 20  # one pipeline kept its state: no restart, no re-read
    assert cam.errors == 10 + 1  # 10 raised + 1 the pipeline caught from a plug-in
    assert rig.metric("gridwatch_edge_camera_errors_total") == 11
    assert [d.event_id for d in rig.sunk] == ["e4", "e10"]
    assert {(d.station_id, d.source_id) for d in rig.sunk} == {(STATION, "cam-1")}
    assert rig.workers.restarts() == {"camera-cam-1-reader": 0,
                                         "camera-cam-1-detector": 0}
    assert rig.workers.alive()["camera-cam-1-detector"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # logged once, not once per frame
    assert f"station {STATION} camera cam-1: detector failed" in errors[0].getMessage()
    # one line with the reason, no traceback (it is at DEBUG level)
    assert "RuntimeError: detector broke on call 1" in errors[0].getMessage()
    assert errors[0].exc_info is None
    # 11 of the last 20 frames failed: the camera is unhealthy, in status and metrics
    assert not cam.healthy and cam.last_error is not None
    assert rig.metrics.registry.get_sample_value("gridwatch_edge_camera_healthy",
                                                 {"source": "cam-1"}) == 0.0


def test_the_pipeline_is_closed_when_the_worker_stops(tmp_path: Path) -> None:
    pipeline = RecordingPipeline()
    cam = CameraWorkers(make_camera(tmp_path / "none.avi"), STATION, lambda d: None,
                        pipeline=pipeline)
    stop = threading.Event()
    thread = threading.Thread(target=cam.run_detector, args=(stop,))
    thread.start()
    stop.set()
    thread.join(5)
    assert pipeline.closed == 1


def test_a_detector_that_cannot_start_dies_to_be_restarted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def factory(source: CameraSource) -> Any:
        raise ValueError("riders.onnx: no such file")

    cam = CameraWorkers(make_camera(tmp_path / "none.avi"), STATION, lambda d: None,
                        pipeline_factory=factory)
    with pytest.raises(ValueError, match="riders.onnx"):
        cam.run_detector(threading.Event())
    assert f"station {STATION} camera cam-1: cannot start the detectors" in caplog.text


def test_file_start_falls_back_to_the_camera_yaml() -> None:
    source = make_camera("x.avi", start=None)
    cam = CameraWorkers(source, STATION, lambda d: None, file_start=START + timedelta(hours=1))
    assert cam.file_start == START + timedelta(hours=1)
    assert CameraWorkers(make_camera("x.avi"), STATION, lambda d: None,
                         file_start=START + timedelta(hours=1)).file_start == START


@pytest.mark.parametrize(("file_fps", "step_s"), [(None, 0.1), (5.0, 0.2)])
def test_the_camera_yaml_frame_rate_overrides_the_files(tmp_path: Path, file_fps, step_s
                                                         ) -> None:
    """A file's own rate gives its event times unless the camera YAML sets frame_rate."""
    video = make_video(tmp_path, n_frames=6, fps=10)
    pipeline = RecordingPipeline()
    cam = CameraWorkers(make_camera(video), STATION, lambda d: None,
                        pipeline_factory=lambda s: pipeline, file_fps=file_fps)
    stop = threading.Event()
    threads = [threading.Thread(target=cam.run_reader, args=(stop,)),
               threading.Thread(target=cam.run_detector, args=(stop,))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not (cam.finished.is_set() and cam.frames_processed == 6):
        assert time.monotonic() < deadline, "the file was not read"
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join(timeout=5)
    assert offsets(pipeline.seen) == pytest.approx([i * step_s for i in range(6)])


def test_camera_frame_rate_warns_on_a_mismatch(tmp_path: Path, caplog) -> None:
    from detectors.camera import camera_config_from_dict
    from edge.sources import camera_frame_rate

    video = make_video(tmp_path, n_frames=3, fps=10)
    base = {"station_id": STATION, "source_id": "cam-1",
            "ground": {"fixed_lon_lat": [113.15, 23.04]},
            "lanes": [{"name": "l", "polygon_xy": [[0, 0], [9, 0], [9, 9]],
                       "direction_xy": [[0, 0], [9, 0]]}],
            "detectors": [{"type": "wrong_way_ebike"}]}
    source = make_camera(video)
    assert camera_frame_rate(source, camera_config_from_dict(base)) == 10.0
    assert "overrides" not in caplog.text
    assert camera_frame_rate(source, camera_config_from_dict({**base, "frame_rate": 25})) == 25
    assert "camera frame_rate 25 overrides" in caplog.text and "own 10 fps" in caplog.text
