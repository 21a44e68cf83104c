"""Helmetless riders: a rider without a helmet, decided once per track by a vote.

* **Rider**: a person box sitting on a two-wheeler box (:func:`associate_riders`), or a
  model's own rider class.
* **Helmet status per frame**: a head box (role ``helmet`` / ``no_helmet``) inside the
  top of the rider box, from the same model or from a second detection model
  (``head_detector``, e.g. a public "With Helmet" / "Without Helmet" head detector), or
  a second ONNX classifier on the head crop.
* **Decision**: :class:`HelmetVote` collects confident per-frame votes per track and
  decides once: helmetless (one detection with a JPEG snapshot) or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from detectors.api import DetectorConfigBase, DetectorContext, DetectorPlugin
from detectors.backends import BackendConfig, MotionBackendConfig
from detectors.core import Detections, box_intersection
from detectors.evidence import track_detection
from detectors.inference import TrackedFrame
from detectors.roles import ClassKey, normalise_class_map
from detectors.schema import Detection
from detectors.tracking import TrackerConfig

KIND = "helmetless_rider"


class HeadClassifierConfig(DetectorConfigBase):
    """A second model that classifies the head crop of each rider.

    Attributes:
        model_path: ONNX classifier, input ``(1, 3, h, w)`` RGB in ``[0, 1]``.
        classes: its class map ``{index or model name: role}`` (as for detectors).
        helmet_classes / no_helmet_classes: which names mean helmet / no helmet.
        head_fraction: the top share of the rider's person box taken as the head crop.
    """

    type: Literal["onnx_classifier"] = "onnx_classifier"
    model_path: Path
    classes: dict[ClassKey, str] = Field(min_length=2)
    helmet_classes: list[str] = Field(default_factory=lambda: ["helmet"])
    no_helmet_classes: list[str] = Field(default_factory=lambda: ["no_helmet"])
    head_fraction: float = Field(default=0.3, gt=0, le=1)

    @field_validator("classes")
    @classmethod
    def _class_roles(cls, value: dict[ClassKey, str]) -> dict[ClassKey, str]:
        return normalise_class_map(value)


class HelmetConfig(DetectorConfigBase):
    """Config of the ``helmetless_rider`` detector.

    Attributes:
        backend: the detection model (``onnx`` or ``ultralytics``; ``motion`` is refused).
        person_classes / vehicle_classes / rider_classes: class names in the class map.
        helmet_classes / no_helmet_classes: head roles, from the same model or from
            ``head_detector``.
        head_detector: a second detection model (``onnx`` or ``ultralytics``) whose class
            map gives head roles, e.g. ``{"With Helmet": helmet, "Without Helmet":
            no_helmet}``; it runs on the whole frame, once per analysed frame.
        head_classifier: a second model on the head crop, instead of head boxes.
        min_overlap: share of the two-wheeler box the person must cover to ride it.
        max_riders_per_vehicle: riders one two-wheeler can carry (pillion counts).
        head_fraction: the top share of a rider box where its head must be.
        min_votes: confident frames needed before deciding.
        min_vote_confidence: per-frame head confidence for a vote to count.
        min_helmetless_ratio: share (confidence-weighted) of "no helmet" votes to report.
        max_votes: a track still undecided after this many votes is dropped undecided.
    """

    type: Literal["helmetless_rider"] = "helmetless_rider"
    backend: BackendConfig
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    person_classes: list[str] = Field(default_factory=lambda: ["person"])
    vehicle_classes: list[str] = Field(
        default_factory=lambda: ["bicycle", "motorcycle", "e-bike"]
    )
    rider_classes: list[str] = Field(default_factory=lambda: ["rider"])
    helmet_classes: list[str] = Field(default_factory=lambda: ["helmet"])
    no_helmet_classes: list[str] = Field(default_factory=lambda: ["no_helmet", "head"])
    head_detector: BackendConfig | None = None
    head_classifier: HeadClassifierConfig | None = None
    min_overlap: float = Field(default=0.2, gt=0, le=1)
    max_riders_per_vehicle: int = Field(default=2, ge=1)
    head_fraction: float = Field(default=0.35, gt=0, le=1)
    min_votes: int = Field(default=5, ge=1)
    min_vote_confidence: float = Field(default=0.4, ge=0, le=1)
    min_helmetless_ratio: float = Field(default=0.6, gt=0.5, le=1)
    max_votes: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _model_backend(self) -> HelmetConfig:
        if isinstance(self.backend, MotionBackendConfig):
            raise ValueError("helmetless_rider needs a detection model (onnx or ultralytics "
                             "backend); the motion backend cannot see riders or helmets")
        if isinstance(self.head_detector, MotionBackendConfig):
            raise ValueError("head_detector must be a detection model (onnx or ultralytics)")
        if self.head_detector is not None and self.head_classifier is not None:
            raise ValueError("give head_detector or head_classifier, not both")
        if self.max_votes < self.min_votes:
            raise ValueError("max_votes must be >= min_votes")
        return self


def associate_riders(
    persons: Detections, vehicles: Detections, *, min_overlap: float = 0.2,
    max_riders_per_vehicle: int = 2,
) -> list[tuple[int, int]]:
    """Pair persons with the two-wheelers they ride.

    A person rides a vehicle when the person box covers at least ``min_overlap`` of the
    vehicle box, the person's horizontal centre is over the vehicle (±25 % of its width)
    and the person's centre is above the vehicle's centre. Pairs are chosen greedily by
    overlap; a person rides at most one vehicle.

    Returns:
        ``(person_index, vehicle_index)`` pairs, sorted by person index.
    """
    if not len(persons) or not len(vehicles):
        return []
    p, v = persons.xyxy, vehicles.xyxy
    inter = box_intersection(p, v)
    overlap = inter / np.maximum(vehicles.area[None, :], 1e-6)
    p_cx = (p[:, 0] + p[:, 2]) / 2
    p_cy = (p[:, 1] + p[:, 3]) / 2
    v_w = v[:, 2] - v[:, 0]
    over = (p_cx[:, None] >= v[None, :, 0] - 0.25 * v_w[None, :]) & (
        p_cx[:, None] <= v[None, :, 2] + 0.25 * v_w[None, :]
    )
    above = p_cy[:, None] < ((v[:, 1] + v[:, 3]) / 2)[None, :]
    score = np.where((overlap >= min_overlap) & over & above, overlap, -1.0)
    pairs: list[tuple[int, int]] = []
    used_person: set[int] = set()
    load: dict[int, int] = {}
    for flat in np.argsort(-score, axis=None, kind="stable"):
        i, j = np.unravel_index(flat, score.shape)
        if score[i, j] < 0:
            break
        if int(i) in used_person or load.get(int(j), 0) >= max_riders_per_vehicle:
            continue
        pairs.append((int(i), int(j)))
        used_person.add(int(i))
        load[int(j)] = load.get(int(j), 0) + 1
    return sorted(pairs)


def head_status(
    rider_xyxy: np.ndarray, heads: Detections, helmet_ids: set[int], no_helmet_ids: set[int],
    head_fraction: float,
) -> tuple[bool, float] | None:
    """``(helmetless, confidence)`` from the best head box in the rider's head region.

    A head counts when its centre lies inside the rider box horizontally and within its top
    ``head_fraction`` vertically. ``None`` when no head is visible.
    """
    if not len(heads):
        return None
    x1, y1, x2, y2 = (float(v) for v in rider_xyxy)
    top = y1 + head_fraction * (y2 - y1)
    cx = (heads.xyxy[:, 0] + heads.xyxy[:, 2]) / 2
    cy = (heads.xyxy[:, 1] + heads.xyxy[:, 3]) / 2
    inside = (cx >= x1) & (cx <= x2) & (cy >= y1) & (cy <= top)
    if not inside.any():
        return None
    best = int(np.flatnonzero(inside)[np.argmax(heads.confidence[inside])])
    class_id = int(heads.class_id[best])
    if class_id in helmet_ids:
        return False, float(heads.confidence[best])
    if class_id in no_helmet_ids:
        return True, float(heads.confidence[best])
    return None


class Verdict(str, Enum):  # noqa: UP042 - CONVENTIONS: str enums
    """Outcome of a track's vote."""

    HELMETLESS = "helmetless"
    HELMETED = "helmeted"
    UNDECIDED = "undecided"


HELMETLESS = Verdict.HELMETLESS
HELMETED = Verdict.HELMETED
UNDECIDED = Verdict.UNDECIDED


@dataclass
class _Ballot:
    helmetless: float = 0.0
    helmeted: float = 0.0
    votes: int = 0
    helmetless_confidences: list[float] = field(default_factory=list)


class HelmetVote:
    """Per-track vote over frames; each track is decided once (pure, no I/O).

    Example:
        >>> vote = HelmetVote(min_votes=3, min_vote_confidence=0.5, min_helmetless_ratio=0.6)
        >>> verdict, score = [vote.add(7, True, 0.9) for _ in range(3)][-1]
        >>> verdict.value, score
        ('helmetless', 0.9)
        >>> vote.add(7, True, 0.9) is None   # already decided
        True
    """

    def __init__(
        self, *, min_votes: int = 5, min_vote_confidence: float = 0.4,
        min_helmetless_ratio: float = 0.6, max_votes: int = 30,
    ) -> None:
        self.min_votes = min_votes
        self.min_vote_confidence = min_vote_confidence
        self.min_helmetless_ratio = min_helmetless_ratio
        self.max_votes = max(max_votes, min_votes)
        self._ballots: dict[int, _Ballot] = {}
        self.decided: dict[int, Verdict] = {}

    def add(self, track_id: int, helmetless: bool, confidence: float
            ) -> tuple[Verdict, float] | None:
        """Count one frame's head status; returns ``(verdict, confidence)`` once."""
        if track_id in self.decided or confidence < self.min_vote_confidence:
            return None
        ballot = self._ballots.setdefault(track_id, _Ballot())
        ballot.votes += 1
        if helmetless:
            ballot.helmetless += confidence
            ballot.helmetless_confidences.append(confidence)
        else:
            ballot.helmeted += confidence
        if ballot.votes < self.min_votes:
            return None
        ratio = ballot.helmetless / (ballot.helmetless + ballot.helmeted)
        verdict: Verdict | None = None
        if ratio >= self.min_helmetless_ratio:
            verdict = HELMETLESS
        elif ratio <= 1 - self.min_helmetless_ratio:
            verdict = HELMETED
        elif ballot.votes >= self.max_votes:
            verdict = UNDECIDED
        if verdict is None:
            return None
        self.decided[track_id] = verdict
        del self._ballots[track_id]
        score = ratio * float(np.mean(ballot.helmetless_confidences or [0.0]))
        return verdict, round(score, 4)

    def forget(self, track_ids: set[int]) -> None:
        """Drop the open ballots of tracks that ended."""
        for key in track_ids:
            self._ballots.pop(key, None)


class HelmetlessRiderDetector:
    """The ``helmetless_rider`` detector: model → ByteTrack → riders → head vote."""

    def __init__(self, config: HelmetConfig, context: DetectorContext) -> None:
        self.config = config
        self.context = context
        self.hub = context.shared_hub()
        backend = self.hub.backend(config.backend)
        names = set(backend.class_names.values())
        has_riders = bool(names & set(config.rider_classes))
        has_pairs = bool(names & set(config.person_classes)) and bool(
            names & set(config.vehicle_classes)
        )
        if not (has_riders or has_pairs):
            raise ValueError(
                f"class map {sorted(names)} has neither a rider class {config.rider_classes} "
                f"nor person {config.person_classes} + two-wheeler {config.vehicle_classes}"
            )
        head_roles = set(config.helmet_classes + config.no_helmet_classes)
        has_heads = bool(names & head_roles)
        self.classifier = None
        self.head_backend = None
        if config.head_detector is not None and config.head_detector == config.backend:
            has_heads = bool(names & head_roles)  # the same model: its own head roles
            if not has_heads:
                raise ValueError(f"head_detector is the detection model itself, whose class "
                                 f"map {sorted(names)} has no head roles "
                                 f"{config.helmet_classes + config.no_helmet_classes}")
        elif config.head_detector is not None:
            self.head_backend = self.hub.backend(config.head_detector)
            head_names = set(self.head_backend.class_names.values())
            if not head_names & head_roles:
                raise ValueError(
                    f"head_detector class map gives roles {sorted(head_names)}, none of the "
                    f"head roles {config.helmet_classes + config.no_helmet_classes}; map its "
                    "classes, e.g. {'With Helmet': helmet, 'Without Helmet': no_helmet}")
        elif config.head_classifier is not None:
            from detectors.backends.onnx import OnnxClassifier

            hc = config.head_classifier
            self.classifier = OnnxClassifier(hc.model_path, hc.classes)
            unknown = sorted(set(hc.helmet_classes + hc.no_helmet_classes)
                             - set(hc.classes.values()))
            if unknown:
                raise ValueError(f"head_classifier classes {unknown} are not in its class map")
        elif not has_heads:
            raise ValueError(
                f"class map {sorted(names)} has no head classes "
                f"{config.helmet_classes + config.no_helmet_classes}; "
                "add them, or configure a head_detector or a head_classifier"
            )
        self.vote = HelmetVote(
            min_votes=config.min_votes, min_vote_confidence=config.min_vote_confidence,
            min_helmetless_ratio=config.min_helmetless_ratio, max_votes=config.max_votes,
        )
        self._first_seen: dict[int, datetime] = {}

    def process(self, frame: np.ndarray, observed_at: datetime) -> list[Detection]:
        """Track this frame and report riders whose vote just came out helmetless."""
        tracked = self.hub.tracked(
            self.config.backend, self.config.tracker, self.context.frame_rate, frame,
            observed_at,
        )
        heads = None
        if self.head_backend is not None:
            heads = TrackedFrame(self.head_backend.infer(frame), self.head_backend.class_names)
        return self.process_tracked(tracked, frame, observed_at, heads=heads)

    def riders(self, tracked: TrackedFrame) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(track_id, head_region_box, evidence_box)`` of every rider in the frame."""
        cfg = self.config
        out: list[tuple[int, np.ndarray, np.ndarray]] = []
        own = tracked.of_classes(cfg.rider_classes)
        for i in range(len(own)):
            out.append((int(own.tracker_id[i]), own.xyxy[i], own.xyxy[i]))  # type: ignore[index]
        persons = tracked.of_classes(cfg.person_classes)
        vehicles = tracked.of_classes(cfg.vehicle_classes)
        for pi, vi in associate_riders(
            persons, vehicles, min_overlap=cfg.min_overlap,
            max_riders_per_vehicle=cfg.max_riders_per_vehicle,
        ):
            p, v = persons.xyxy[pi], vehicles.xyxy[vi]
            union = np.array([min(p[0], v[0]), min(p[1], v[1]), max(p[2], v[2]),
                              max(p[3], v[3])], dtype=np.float32)
            out.append((int(persons.tracker_id[pi]), p, union))  # type: ignore[index]
        return out

    def process_tracked(
        self, tracked: TrackedFrame, frame: np.ndarray | None, observed_at: datetime,
        *, heads: TrackedFrame | None = None,
    ) -> list[Detection]:
        """The decision part of :meth:`process`, fed with already tracked detections.

        Args:
            heads: head boxes of a separate head detector (untracked); default: the head
                roles of ``tracked`` itself.
        """
        cfg = self.config
        head_source = heads if heads is not None else tracked
        head_boxes = head_source.of_classes(cfg.helmet_classes + cfg.no_helmet_classes)
        helmet_ids = head_source.class_ids(cfg.helmet_classes)
        no_helmet_ids = head_source.class_ids(cfg.no_helmet_classes)
        out: list[Detection] = []
        for track_id, person_box, evidence_box in self.riders(tracked):
            self._first_seen.setdefault(track_id, observed_at)
            if self.classifier is not None and frame is not None:
                status = self._classify_head(frame, person_box)
            else:
                status = head_status(person_box, head_boxes, helmet_ids, no_helmet_ids,
                                     cfg.head_fraction)
            if status is None:
                continue
            result = self.vote.add(track_id, *status)
            if result is None or result[0] != HELMETLESS:
                continue
            out.append(track_detection(
                self.context, kind=KIND, confidence=result[1], xyxy=evidence_box,
                track_id=track_id, first_seen=self._first_seen[track_id],
                observed_at=observed_at, frame=frame,
                attributes={"min_votes": self.config.min_votes},
            ))
        return out

    def _classify_head(self, frame: np.ndarray, person_box: np.ndarray
                       ) -> tuple[bool, float] | None:
        assert self.classifier is not None and self.config.head_classifier is not None
        hc = self.config.head_classifier
        x1, y1, x2, y2 = (int(round(float(v))) for v in person_box)
        y_head = y1 + max(1, int((y2 - y1) * hc.head_fraction))
        crop = frame[max(0, y1):y_head, max(0, x1):x2]
        name, prob = self.classifier.classify(crop)
        if name in hc.no_helmet_classes:
            return True, prob
        if name in hc.helmet_classes:
            return False, prob
        return None

    def close(self) -> None:
        """Release the models."""
        self.hub.close()
        if self.classifier is not None:
            self.classifier.close()


PLUGIN = DetectorPlugin(
    name=KIND,
    config_model=HelmetConfig,
    factory=HelmetlessRiderDetector,
    kinds=(KIND,),
    description="riders (person on a two-wheeler, or a rider class) voted helmetless over "
    "their track; needs your ONNX/.pt model",
    example_config=None,
)
