"""Shared inference and tracking for one camera.

Two detectors on one camera that use the same model (and tracker settings) share one
backend and one tracker, and the model runs once per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from detectors.backends import (
    InferenceBackend,
    MotionBackendConfig,
    OnnxBackendConfig,
    UltralyticsBackendConfig,
    build_backend,
)
from detectors.core import Detections
from detectors.tracking import ByteTracker, TrackerConfig

AnyBackendConfig = MotionBackendConfig | OnnxBackendConfig | UltralyticsBackendConfig


@dataclass(frozen=True)
class TrackedFrame:
    """One frame's tracked detections and the class map that names them."""

    detections: Detections
    class_names: dict[int, str]

    def class_ids(self, names: list[str] | None) -> set[int]:
        """Indices of the given class names (all classes for ``None``)."""
        if names is None:
            return set(self.class_names)
        return {i for i, n in self.class_names.items() if n in names}

    def of_classes(self, names: list[str] | None) -> Detections:
        """Only detections whose class name is in ``names`` (all for ``None``)."""
        if names is None:
            return self.detections
        return self.detections[np.isin(self.detections.class_id, sorted(self.class_ids(names)))]


def detector_threshold(config: AnyBackendConfig) -> float | None:
    """The confidence below which the backend drops boxes (``None`` for ``motion``)."""
    value = getattr(config, "confidence_threshold", None)
    return None if value is None else float(value)


class InferenceHub:
    """Backends and trackers of one camera, keyed by their configs, with a per-frame memo."""

    def __init__(self) -> None:
        self._backends: dict[str, InferenceBackend] = {}
        self._trackers: dict[str, ByteTracker] = {}
        self._memo: dict[str, tuple[tuple[int, datetime], TrackedFrame]] = {}
        self.inference_s = 0.0
        self._origin: datetime | None = None
        #: called as ``observer(key, observed_at, tracked)`` for every newly tracked frame
        #: (tuning tools: ``--tracks-out``, ``--annotate``).
        self.observers: list[Callable[[str, datetime, TrackedFrame], None]] = []

    def backend(self, config: AnyBackendConfig) -> InferenceBackend:
        """The backend for ``config`` (built once; raises ``ValueError`` on bad files)."""
        key = config.model_dump_json()
        if key not in self._backends:
            self._backends[key] = build_backend(config)
        return self._backends[key]

    def backends(self) -> list[InferenceBackend]:
        """Every backend built so far."""
        return list(self._backends.values())

    def tracked(
        self,
        backend_config: AnyBackendConfig,
        tracker_config: TrackerConfig,
        frame_rate: float,
        frame: np.ndarray,
        observed_at: datetime,
    ) -> TrackedFrame:
        """Run (or reuse) the backend and tracker on this frame."""
        backend = self.backend(backend_config)
        key = backend_config.model_dump_json() + tracker_config.model_dump_json()
        stamp = (id(frame), observed_at)
        cached = self._memo.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if key not in self._trackers:
            self._trackers[key] = ByteTracker(
                tracker_config.resolved(detector_threshold(backend_config)), frame_rate)
        detections = backend.infer(frame)
        self.inference_s += float(getattr(backend, "last_inference_s", 0.0))
        if self._origin is None:
            self._origin = observed_at
        timestamp_s = (observed_at - self._origin).total_seconds()
        result = TrackedFrame(
            self._trackers[key].update(detections, timestamp_s), backend.class_names
        )
        self._memo[key] = (stamp, result)
        for observer in self.observers:
            observer(key, observed_at, result)
        return result

    def close(self) -> None:
        """Close every backend."""
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()
        self._trackers.clear()
        self._memo.clear()
