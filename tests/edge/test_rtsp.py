"""Live cameras for real: a local RTSP server (GStreamer's, started here) serving a
rendered clip to the camera reader.

The server needs a Python with GStreamer's introspection bindings (Debian's
``python3-gi`` and friends, see ``tests/edge/rtsp_server.py``); without them these tests
fail with the install command, they never skip.
"""

from __future__ import annotations

import logging
import select
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from . import test_sources_camera
from .test_sources_camera import RecordingPipeline, make_camera, make_video

rig_factory = test_sources_camera.rig_factory  # the camera-worker rig fixture, shared

SERVER = Path(__file__).with_name("rtsp_server.py")
GST_PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp "
                "gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly")
PROBE = ("import gi; gi.require_version('GstRtspServer', '1.0'); "
         "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
         "assert Gst.ElementFactory.find('x264enc') and Gst.ElementFactory.find('avidemux')")


@pytest.fixture(scope="module")
def gst_python() -> str:
    for candidate in (sys.executable, shutil.which("python3"), "/usr/bin/python3"):
        if candidate and subprocess.run([candidate, "-c", PROBE], capture_output=True,
                                        timeout=60).returncode == 0:
            return candidate
    pytest.fail(f"no Python with GStreamer's RTSP server: apt-get install -y {GST_PACKAGES} "
                "(or run scripts/test_assets.sh)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RtspServer:
    """``rtsp://127.0.0.1:<port>/clip`` served by a child process; stop and start again."""

    def __init__(self, python: str, video: Path) -> None:
        self.python, self.video, self.port = python, video, free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/clip"
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.python, str(SERVER), str(self.port), str(self.video)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 30)
        line = self.process.stdout.readline() if ready else ""
        if line.strip() != "ready":
            self.stop()
            pytest.fail(f"the RTSP server did not start: {line!r}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def rtsp_server(gst_python, tmp_path) -> Iterator[RtspServer]:
    video = make_video(tmp_path, n_frames=600, fps=25.0, name="clip.avi")  # 24 s
    server = RtspServer(gst_python, video)
    server.start()
    yield server
    server.stop()


def wait_for(rig, condition: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
    try:
        rig.wait(condition, timeout_s=timeout_s)
    except AssertionError:
        pytest.fail(f"not within {timeout_s:.0f} s: {what}")


def test_frames_flow_and_the_reader_reconnects_after_a_server_restart(
        rtsp_server, rig_factory, caplog) -> None:
    caplog.set_level(logging.INFO)
    pipeline = RecordingPipeline()
    source = make_camera(rtsp_server.url, reopen_min_s=0.2, reopen_max_s=1.0)
    rig = rig_factory((source, pipeline))
    cam = rig.cameras["cam-1"]
    wait_for(rig, lambda: cam.frames_processed >= 20, "20 frames over RTSP")
    assert pipeline.shapes == {(240, 320, 3)}
    # live event time: the wall clock when read, never the file's own timeline
    assert all(t.tzinfo is not None for t in pipeline.seen)
    assert abs((pipeline.seen[-1] - datetime.now(UTC)).total_seconds()) < 60
    assert cam.open_failures == 0

    rtsp_server.stop()
    wait_for(rig, lambda: cam.open_failures >= 2, "re-open attempts while the server is down")
    before = cam.frames_processed
    rtsp_server.start()
    wait_for(rig, lambda: cam.frames_processed >= before + 20, "frames again after restart")
    messages = [r.getMessage() for r in caplog.records]
    assert any("camera cam-1: stream ended" in m and "re-opening in 0.2s" in m
               for m in messages)
    waits = [float(m.rsplit("retrying in ", 1)[1].rstrip("s")) for m in messages
             if "camera cam-1: cannot open" in m]
    assert waits[:2] == [0.4, 0.8]  # the back-off doubles (up to reopen_max_s)
    assert all(w <= 1.0 for w in waits)
    assert rig.workers.restarts() == {"camera-cam-1-reader": 0, "camera-cam-1-detector": 0}


def test_a_slow_detector_drops_the_oldest_frames_and_the_queue_stays_bounded(
        rtsp_server, rig_factory) -> None:
    pipeline = RecordingPipeline(delay_s=0.2)  # 5 frames/s against a 25 fps stream
    source = make_camera(rtsp_server.url, frame_queue=2)
    rig = rig_factory((source, pipeline))
    cam = rig.cameras["cam-1"]
    sizes: list[int] = []

    def dropped_enough() -> bool:
        sizes.append(cam.frames.qsize())
        return cam.frames_dropped >= 20 and cam.frames_processed >= 5

    wait_for(rig, dropped_enough, "20 frames dropped by the slow detector")
    assert max(sizes) <= 2
    assert rig.metric("gridwatch_edge_camera_frames_dropped_total") == cam.frames_dropped
    # what the detector got is recent: the newest frames, not a growing backlog
    assert cam.frames_read - cam.frames_processed - cam.frames_dropped <= 3
