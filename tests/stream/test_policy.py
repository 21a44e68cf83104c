"""The per-kind policy book and the stream's event-time settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from geo.admin import Level
from stream.policy import KindPolicy, Mode, PolicyBook, StreamSettings

SMOKE = KindPolicy(label="Smoke", mode=Mode.INCIDENT, window_s=120, level=Level.TOWN,
                   department="fire_rescue", priority="P1", auto_dispatch=True)
RIDERS = KindPolicy(mode=Mode.HOTSPOT, level=Level.DISTRICT, department="traffic_police")
BOOK = PolicyBook(kinds={"smoke": SMOKE, "helmetless_rider": RIDERS},
                  default_kind=KindPolicy(label="Other", priority="P4"))


@pytest.mark.parametrize(("kind", "known", "expected"), [
    ("smoke", True, SMOKE),
    ("helmetless_rider", True, RIDERS),
    ("illegal_parking", False, BOOK.default_kind),  # a plug-in's new kind
    ("Smoke", False, BOOK.default_kind),  # kinds are exact
])
def test_each_kind_gets_its_own_policy_and_others_the_default(kind: str, known: bool,
                                                              expected: KindPolicy) -> None:
    assert BOOK.is_known(kind) is known
    assert BOOK.for_kind(kind) == expected


def test_the_default_for_unconfigured_kinds_waits_for_review() -> None:
    policy = PolicyBook().for_kind("anything")
    assert (policy.mode, policy.auto_dispatch, policy.department, policy.level) == \
        (Mode.INCIDENT, False, "command_centre", Level.TOWN)


@pytest.mark.parametrize(("fields", "error"), [
    ({"mode": "sometimes"}, "mode"),
    ({"level": "county"}, "level"),
    ({"priority": "P9"}, "priority"),
    ({"review_below_confidence": 1.5}, "review_below_confidence"),
    ({"window_s": -1}, "window_s"),
    ({"windows": 600}, "windows"),  # a typo is refused, not ignored
])
def test_a_bad_kind_policy_names_the_field(fields: dict, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        KindPolicy.model_validate(fields)


@pytest.mark.parametrize(("fields", "age_limit_s"), [
    ({}, 2 * 86400),  # max_age_s unset: as long as a re-sent detection is recognised
    ({"max_age_s": 3600}, 3600),
    ({"dedup_horizon_s": 7200, "max_age_s": 7200}, 7200),
])
def test_the_age_limit_defaults_to_the_dedup_horizon(fields: dict, age_limit_s: int) -> None:
    assert StreamSettings(**fields).age_limit_s == age_limit_s


def test_an_age_limit_beyond_the_dedup_horizon_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"expected max_age_s <= dedup_horizon_s \(3600\)"):
        StreamSettings(dedup_horizon_s=3600, max_age_s=7200)
