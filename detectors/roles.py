"""Class roles: which model class means what to GridWatch.

A camera's ``classes:`` map says, for one model, which of its classes play which GridWatch
*role* (``person``, ``rider``, ``bicycle``, ``motorcycle``, ``e-bike``, ``helmet``,
``no_helmet`` …). Keys are the model's class indices or the names in its metadata; several
classes may share one role::

    classes: {Normal: person, Fall: person}      # by the model's own names
    classes: {0: person, 1: person}              # or by index

Detectors only ever see roles, so a camera file works with another model by changing this
map alone. Classes left out are ignored (dropped before NMS).

Example:
    >>> roles = ClassRoles.resolve({"Normal": "person", 1: "person"},
    ...                            model_names={0: "Normal", 1: "Fall"}, n_classes=2,
    ...                            source="m.onnx")
    >>> roles.class_names, roles.role_of_class
    ({0: 'person'}, {0: 'person', 1: 'person'})
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

#: Roles the built-in detectors look for by default; a plug-in may use its own.
KNOWN_ROLES = ("person", "rider", "bicycle", "motorcycle", "e-bike", "helmet", "no_helmet",
               "head")

ClassKey = int | str


def normalise_class_map(value: Mapping[ClassKey, str]) -> dict[ClassKey, str]:
    """Digit strings become indices (JSON keys are strings); roles must be non-empty.

    Raises:
        ValueError: a negative index or an empty role name.
    """
    out: dict[ClassKey, str] = {}
    for key, role in value.items():
        if isinstance(key, str) and key.strip().isdigit():
            key = int(key)
        if isinstance(key, int) and key < 0:
            raise ValueError(f"class indices must be >= 0, got {key}")
        if not isinstance(role, str) or not role.strip():
            raise ValueError(f"class {key!r}: the role must be a non-empty name")
        if key in out:
            raise ValueError(f"class {key!r} is listed twice")
        out[key] = role.strip()
    return out


@dataclass(frozen=True)
class ClassRoles:
    """A class map resolved against one model.

    Attributes:
        role_of_class: model class index → role.
        class_names: role id → role; role ids number the distinct roles in sorted order
            and are what :class:`~detectors.core.Detections` ``class_id`` carries after
            :meth:`remap`.
    """

    role_of_class: dict[int, str]
    class_names: dict[int, str]

    @classmethod
    def resolve(
        cls,
        mapping: Mapping[ClassKey, str],
        *,
        model_names: Mapping[int, str] | None,
        n_classes: int | None,
        source: str,
    ) -> ClassRoles:
        """Resolve names to indices and check them against the model.

        Raises:
            ValueError: an index the model does not have, a name the model's metadata does
                not list (or a name key for a model without names), two keys for one class.
        """
        mapping = normalise_class_map(mapping)
        role_of_class: dict[int, str] = {}
        by_name = {name: index for index, name in (model_names or {}).items()}
        for key, role in mapping.items():
            if isinstance(key, str):
                if not model_names:
                    raise ValueError(
                        f"class map of {source} names class {key!r} but the model carries "
                        "no class names; use its class indices"
                    )
                if key not in by_name:
                    raise ValueError(
                        f"class map of {source} names class {key!r}, which the model does "
                        f"not have; its classes: {dict(sorted(model_names.items()))}"
                    )
                index = by_name[key]
            else:
                index = key
            if index in role_of_class:
                raise ValueError(f"class map of {source} lists class {index} twice "
                                 "(by index and by name)")
            role_of_class[index] = role
        if n_classes is not None:
            outside = sorted(k for k in role_of_class if k >= n_classes)
            if outside:
                raise ValueError(
                    f"class map of {source} lists indices {outside} but the model has "
                    f"{n_classes} classes (0..{n_classes - 1})"
                )
        roles = sorted(set(role_of_class.values()))
        return cls(role_of_class=dict(sorted(role_of_class.items())),
                   class_names=dict(enumerate(roles)))

    @property
    def role_ids(self) -> dict[str, int]:
        """Role → role id."""
        return {role: i for i, role in self.class_names.items()}

    def remap(self, class_id: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """``(keep_mask, role_ids)`` for model class ids: unmapped classes are dropped."""
        ids = np.asarray(class_id, dtype=np.int64).reshape(-1)
        role_ids = self.role_ids
        lut_size = max(max(self.role_of_class, default=0), int(ids.max(initial=0))) + 1
        lut = np.full(lut_size, -1, dtype=np.int64)
        for index, role in self.role_of_class.items():
            lut[index] = role_ids[role]
        mapped = np.where(ids >= 0, lut[np.clip(ids, 0, lut_size - 1)], -1)
        keep = mapped >= 0
        return keep, mapped[keep]

    def describe(self, model_names: Mapping[int, str] | None = None) -> str:
        """``0 'Normal' → person, 1 'Fall' → person`` (for logs and ``detectors check``)."""
        parts = []
        for index, role in self.role_of_class.items():
            name = (model_names or {}).get(index)
            parts.append(f"{index}{f' {name!r}' if name else ''} → {role}")
        return ", ".join(parts)
