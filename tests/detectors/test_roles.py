"""Class roles: model classes (by index or name, many to one) → GridWatch roles."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.roles import ClassRoles, normalise_class_map

NAMES = {0: "Normal", 1: "Fall", 2: "With Helmet"}


@pytest.mark.parametrize(
    ("mapping", "names", "n_classes", "expected", "error"),
    [
        ({0: "person", 1: "person"}, NAMES, 3, {0: "person", 1: "person"}, None),
        ({"Normal": "person", "Fall": "person"}, NAMES, 3, {0: "person", 1: "person"}, None),
        ({"With Helmet": "helmet", 0: "person"}, NAMES, 3, {0: "person", 2: "helmet"}, None),
        ({"2": "helmet"}, None, 3, {2: "helmet"}, None),
        ({7: "person"}, None, 3, None, r"lists indices \[7\] but the model has 3 classes"),
        ({"Walking": "person"}, NAMES, 3, None, "names class 'Walking', which the model"),
        ({"Normal": "person"}, None, 3, None, "carries no class names"),
        ({0: "person", "Normal": "rider"}, NAMES, 3, None, "lists class 0 twice"),
        ({-1: "person"}, None, 3, None, "class indices must be >= 0"),
        ({0: " "}, None, 3, None, "the role must be a non-empty name"),
    ],
)
def test_resolve(mapping, names, n_classes, expected, error) -> None:
    if error is not None:
        with pytest.raises(ValueError, match=error):
            ClassRoles.resolve(mapping, model_names=names, n_classes=n_classes, source="m")
        return
    roles = ClassRoles.resolve(mapping, model_names=names, n_classes=n_classes, source="m")
    assert roles.role_of_class == expected
    assert sorted(roles.class_names.values()) == sorted(set(expected.values()))


def test_remap_drops_unmapped_classes_and_merges_roles() -> None:
    roles = ClassRoles.resolve({0: "person", 1: "person", 3: "bicycle"}, model_names=None,
                               n_classes=5, source="m")
    keep, role_ids = roles.remap(np.array([0, 1, 2, 3, 4, 1]))
    assert keep.tolist() == [True, True, False, True, False, True]
    assert [roles.class_names[i] for i in role_ids.tolist()] == [
        "person", "person", "bicycle", "person"]


def test_describe_names_model_classes() -> None:
    roles = ClassRoles.resolve({"Normal": "person", "Fall": "person"}, model_names=NAMES,
                               n_classes=3, source="m")
    assert roles.describe(NAMES) == "0 'Normal' → person, 1 'Fall' → person"


def test_json_keys_are_indices() -> None:
    assert normalise_class_map({"0": "person", "Fall": "person"}) == {0: "person",
                                                                       "Fall": "person"}
