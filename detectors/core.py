"""In-process detection batches: numpy columns, validated once, filtered with masks.

This is the supervision ``Detections`` shape (``xyxy``, ``confidence``, ``class_id``,
optional ``tracker_id``) without the dependency, so the decision logic can be imported and
unit-tested without OpenCV or supervision. :meth:`Detections.to_supervision` and
:meth:`Detections.from_supervision` convert at the tracker boundary.

Example:
    >>> import numpy as np
    >>> batch = Detections(
    ...     xyxy=np.array([[0, 0, 10, 10], [5, 5, 20, 30]], dtype=np.float32),
    ...     confidence=np.array([0.9, 0.3], dtype=np.float32),
    ...     class_id=np.array([0, 1]),
    ... )
    >>> len(batch[batch.confidence > 0.5])
    1
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Detections:
    """A batch of ``n`` boxes in one frame.

    Attributes:
        xyxy: ``(n, 4)`` float32 pixel boxes ``[x1, y1, x2, y2]``.
        confidence: ``(n,)`` float32 scores in ``[0, 1]``.
        class_id: ``(n,)`` int64 class indices (meaning given by the backend's class map).
        tracker_id: ``(n,)`` int64 track ids, or ``None`` before tracking.
    """

    xyxy: FloatArray
    confidence: FloatArray
    class_id: IntArray
    tracker_id: IntArray | None = None

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = xyxy.shape[0]
        confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        class_id = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        if confidence.shape != (n,):
            raise ValueError(f"confidence: expected shape ({n},), got {confidence.shape}")
        if class_id.shape != (n,):
            raise ValueError(f"class_id: expected shape ({n},), got {class_id.shape}")
        if n and (np.any(xyxy[:, 2] < xyxy[:, 0]) or np.any(xyxy[:, 3] < xyxy[:, 1])):
            raise ValueError("xyxy: expected x1 <= x2 and y1 <= y2 for every box")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "class_id", class_id)
        if self.tracker_id is not None:
            tracker_id = np.asarray(self.tracker_id, dtype=np.int64).reshape(-1)
            if tracker_id.shape != (n,):
                raise ValueError(f"tracker_id: expected shape ({n},), got {tracker_id.shape}")
            object.__setattr__(self, "tracker_id", tracker_id)

    @classmethod
    def empty(cls) -> Detections:
        """A batch with no boxes."""
        return cls(
            xyxy=np.zeros((0, 4), dtype=np.float32),
            confidence=np.zeros((0,), dtype=np.float32),
            class_id=np.zeros((0,), dtype=np.int64),
        )

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> Detections:
        """Select rows with a boolean mask, an index array, a slice or an int."""
        if isinstance(index, int | np.integer):
            index = [int(index)]
        return Detections(
            xyxy=self.xyxy[index],
            confidence=self.confidence[index],
            class_id=self.class_id[index],
            tracker_id=None if self.tracker_id is None else self.tracker_id[index],
        )

    @property
    def bottom_center(self) -> FloatArray:
        """``(n, 2)`` bottom-centre points ``[x, y]``: where an object touches the ground."""
        return np.stack(
            [(self.xyxy[:, 0] + self.xyxy[:, 2]) / 2, self.xyxy[:, 3]], axis=1
        ).astype(np.float32)

    @property
    def area(self) -> FloatArray:
        """``(n,)`` box areas in square pixels."""
        return ((self.xyxy[:, 2] - self.xyxy[:, 0]) * (self.xyxy[:, 3] - self.xyxy[:, 1])).astype(
            np.float32
        )

    def with_tracker_id(self, tracker_id: npt.ArrayLike) -> Detections:
        """The same boxes with track ids attached."""
        return Detections(self.xyxy, self.confidence, self.class_id, np.asarray(tracker_id))

    @classmethod
    def merge(cls, batches: list[Detections]) -> Detections:
        """Concatenate batches (track ids kept only if every batch has them)."""
        batches = [b for b in batches if len(b)]
        if not batches:
            return cls.empty()
        tracked = all(b.tracker_id is not None for b in batches)
        return cls(
            xyxy=np.concatenate([b.xyxy for b in batches]),
            confidence=np.concatenate([b.confidence for b in batches]),
            class_id=np.concatenate([b.class_id for b in batches]),
            tracker_id=(
                np.concatenate([b.tracker_id for b in batches])  # type: ignore[misc]
                if tracked
                else None
            ),
        )

    def to_supervision(self) -> Any:
        """Convert to ``supervision.Detections`` (imports supervision lazily)."""
        import supervision as sv

        return sv.Detections(
            xyxy=self.xyxy.astype(np.float32),
            confidence=self.confidence.astype(np.float32),
            class_id=self.class_id.astype(int),
            tracker_id=None if self.tracker_id is None else self.tracker_id.astype(int),
        )

    @classmethod
    def from_supervision(cls, detections: Any) -> Detections:
        """Adapter from ``supervision.Detections`` (missing confidence means 1.0)."""
        n = len(detections)
        confidence = (
            np.ones(n, dtype=np.float32)
            if detections.confidence is None
            else detections.confidence
        )
        class_id = (
            np.zeros(n, dtype=np.int64) if detections.class_id is None else detections.class_id
        )
        return cls(
            xyxy=detections.xyxy,
            confidence=confidence,
            class_id=class_id,
            tracker_id=detections.tracker_id,
        )


def box_iou(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise IoU of ``(n, 4)`` and ``(m, 4)`` xyxy boxes, shape ``(n, m)``."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    inter = box_intersection(a, b)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0).astype(np.float32)


def box_intersection(a: FloatArray, b: FloatArray) -> FloatArray:
    """Pairwise intersection areas of ``(n, 4)`` and ``(m, 4)`` xyxy boxes, ``(n, m)``."""
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    return (np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)).astype(np.float32)


def non_max_suppression(
    xyxy: FloatArray,
    confidence: FloatArray,
    class_id: IntArray | None = None,
    iou_threshold: float = 0.45,
) -> IntArray:
    """Greedy NMS; returns kept indices in descending confidence order.

    With ``class_id`` given, boxes only suppress boxes of their own class.
    """
    xyxy = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    n = xyxy.shape[0]
    if n == 0:
        return np.zeros((0,), dtype=np.int64)
    boxes = xyxy
    if class_id is not None:
        # Offsetting each class far apart makes one pass class-aware.
        offset = (np.asarray(class_id, dtype=np.float32) * (float(xyxy.max()) + 1.0))[:, None]
        boxes = xyxy + offset
    order = np.argsort(-np.asarray(confidence), kind="stable")
    keep: list[int] = []
    suppressed = np.zeros(n, dtype=bool)
    ious = box_iou(boxes, boxes)
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= ious[i] > iou_threshold
    return np.asarray(keep, dtype=np.int64)
