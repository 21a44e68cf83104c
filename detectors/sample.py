"""A small deterministic synthetic video and the offline video runner.

``render_sample_video`` draws a bike lane with one rider going the right way and one going
the wrong way; ``sample_data/cameras/demo_camera.yaml`` is the matching camera. The demo
and ``gridwatch detect`` both use :func:`run_video`.

Offline event time: frame ``i`` is observed at ``start + i / fps``, where ``start`` is
the ``--start`` argument, else the camera config's ``start``, else :data:`DEFAULT_START`,
so the same video always gives the same detections.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from detectors.camera import CameraConfig, CameraPipeline, effective_frame_rate
from detectors.schema import Detection

logger = logging.getLogger(__name__)

#: Event time of frame 0 when neither ``--start`` nor the camera config gives one.
DEFAULT_START = datetime.fromisoformat("2026-01-01T08:00:00+08:00")

SAMPLE_SIZE_WH = (320, 240)
SAMPLE_FPS = 10.0
SAMPLE_FRAMES = 80
#: The bike lane of the sample scene: allowed direction left → right.
SAMPLE_LANE_POLYGON = [(0, 120), (320, 120), (320, 215), (0, 215)]


@dataclass(frozen=True)
class MovingBox:
    """An object drawn as a filled box moving through keyframes.

    Attributes:
        keyframes: ``(frame_index, x_centre, y_bottom)`` points; linear in between,
            absent outside the first and last keyframe.
        size_wh: box size in pixels.
        colour_bgr: fill colour.
    """

    keyframes: Sequence[tuple[int, float, float]]
    size_wh: tuple[int, int] = (34, 30)
    colour_bgr: tuple[int, int, int] = (40, 60, 200)

    def position(self, frame_index: int) -> tuple[float, float] | None:
        """``(x_centre, y_bottom)`` at a frame, or ``None`` when not in the scene."""
        frames = [k[0] for k in self.keyframes]
        if frame_index < frames[0] or frame_index > frames[-1]:
            return None
        x = float(np.interp(frame_index, frames, [k[1] for k in self.keyframes]))
        y = float(np.interp(frame_index, frames, [k[2] for k in self.keyframes]))
        return x, y


def sample_scene() -> list[MovingBox]:
    """The demo scene: a right-way rider, then a wrong-way rider, in the bike lane."""
    return [
        MovingBox(keyframes=[(3, 20, 190), (28, 300, 190)], colour_bgr=(40, 160, 40)),
        MovingBox(keyframes=[(48, 300, 190), (75, 20, 190)], colour_bgr=(40, 60, 200)),
    ]


def render_background(size_wh: tuple[int, int]) -> np.ndarray:
    """A road scene: asphalt texture, a bike lane, kerb lines (deterministic)."""
    import cv2

    width, height = size_wh
    rng = np.random.default_rng(7)
    image = np.full((height, width, 3), 95, dtype=np.uint8)
    noise = rng.integers(0, 12, size=(height, width, 3), dtype=np.uint8)
    image = np.asarray(cv2.add(image, noise), dtype=np.uint8)
    top, bottom = int(height * 0.5), int(height * 0.9)
    cv2.rectangle(image, (0, top), (width, bottom), (70, 110, 70), -1)  # green bike lane
    cv2.line(image, (0, top), (width, top), (230, 230, 230), 2)
    cv2.line(image, (0, bottom), (width, bottom), (230, 230, 230), 2)
    for x in range(10, width, 60):  # arrows painted in the allowed direction
        cv2.arrowedLine(image, (x, (top + bottom) // 2), (x + 30, (top + bottom) // 2),
                        (200, 200, 200), 2, tipLength=0.4)
    return image


def render_frame(background: np.ndarray, objects: Sequence[MovingBox], index: int
                 ) -> np.ndarray:
    """One frame: the background with every object present at ``index`` drawn on it."""
    import cv2

    frame = background.copy()
    for obj in objects:
        position = obj.position(index)
        if position is None:
            continue
        x, y = position
        w, h = obj.size_wh
        x1, y1 = int(round(x - w / 2)), int(round(y - h))
        cv2.rectangle(frame, (x1, y1), (x1 + w, y1 + h), obj.colour_bgr, -1)
        cv2.circle(frame, (x1 + w // 2, y1 + 6), 5, (20, 20, 20), -1)  # a "rider" head
        cv2.rectangle(frame, (x1 + 3, y1 + h - 8), (x1 + w - 3, y1 + h - 2), (15, 15, 15), -1)
    return frame


def render_video(
    path: str | Path,
    objects: Sequence[MovingBox],
    *,
    size_wh: tuple[int, int] = SAMPLE_SIZE_WH,
    fps: float = SAMPLE_FPS,
    n_frames: int = SAMPLE_FRAMES,
) -> Path:
    """Write an MJPG ``.avi`` of ``objects`` moving over the road background."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size_wh)
    if not writer.isOpened():
        raise OSError(f"cannot write video {path}")
    background = render_background(size_wh)
    try:
        for index in range(n_frames):
            writer.write(render_frame(background, objects, index))
    finally:
        writer.release()
    return path


def render_sample_video(path: str | Path, *, n_frames: int = SAMPLE_FRAMES) -> Path:
    """Write the demo video (320×240, 10 fps, 8 s): one right-way, one wrong-way rider.

    ``sample_data/cameras/demo_camera.yaml`` describes this camera.
    """
    return render_video(path, sample_scene(), n_frames=n_frames)


def iter_frames(path: str | Path) -> Iterator[tuple[int, np.ndarray, float]]:
    """``(index, frame, fps)`` for each frame of a video file.

    Raises:
        ValueError: the file is missing or not a readable video.
    """
    import cv2

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"video not found: {path}")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise ValueError(f"cannot open video {path} (not a video OpenCV can read)")
    fps = float(capture.get(cv2.CAP_PROP_FPS)) or 0.0
    try:
        index = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            yield index, frame, fps
            index += 1
    finally:
        capture.release()


def video_fps(path: str | Path) -> float | None:
    """The frame rate a video file's header gives (``None`` when it gives none)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    finally:
        capture.release()
    return fps if 0 < fps < 1000 else None


def video_frame_count(path: str | Path) -> int | None:
    """Frames in a video as its header says (``None`` when unknown)."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()
    return count if count > 0 else None


def run_video(
    path: str | Path,
    camera_config: CameraConfig,
    *,
    start: datetime | None = None,
    max_frames: int | None = None,
    on_frame: Callable[[int], None] | None = None,
    pipeline: CameraPipeline | None = None,
) -> Iterator[Detection]:
    """Run a camera's detectors over a video file, yielding detections as they are made.

    Args:
        path: the video file.
        camera_config: the camera. Its ``frame_rate``, when set, overrides the file's
            (with a warning if they differ); see :func:`detectors.camera.effective_frame_rate`.
        start: event time of frame 0 (aware); see the module docstring for the default.
        max_frames: stop after this many frames.
        on_frame: called with each frame index (progress bars).
        pipeline: reuse an existing pipeline (its stats stay readable by the caller).

    Raises:
        ValueError: unreadable video, naive ``start``, or a detector that cannot start.
    """
    start = start or camera_config.start or DEFAULT_START
    if start.tzinfo is None:
        raise ValueError("start must carry a UTC offset (RFC 3339)")
    own_pipeline = pipeline is None
    if pipeline is None:
        if not Path(path).is_file():
            raise ValueError(f"video not found: {path}")
        rate = effective_frame_rate(camera_config, video_fps(path), origin=str(path))
        pipeline = CameraPipeline(camera_config, frame_rate=rate)
    fps = pipeline.frame_rate
    try:
        for index, frame, _file_fps in iter_frames(path):
            if max_frames is not None and index >= max_frames:
                break
            observed_at = start + timedelta(seconds=index / fps)
            yield from pipeline.process(frame, observed_at)
            if on_frame is not None:
                on_frame(index)
    finally:
        if own_pipeline:
            pipeline.close()
