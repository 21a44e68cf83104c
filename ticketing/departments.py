"""The department registry: the units that receive work orders.

A department is an id (what tickets, tokens and routing rules name), a Chinese and an
English name, the level it works at, the administrative units it serves and optionally
its own webhook. The registry is ``ticketing.departments`` in the config; routing,
dispatch, confirm, recall and reclassify accept only ids that are in it, so a work order
cannot be sent to a unit that nobody reads (a department sees only its own tickets).

>>> registry = DEFAULT_DEPARTMENTS
>>> check_department("fire_rescue", registry)
'fire_rescue'
>>> check_department("no_such_dept", registry)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ticketing.departments.UnknownDepartment: unknown department 'no_such_dept' (valid: ...)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from geo.admin import Level
from stream.policy import PolicyBook

DepartmentId = Annotated[str, Field(pattern=r"^[a-z0-9_]+$", min_length=1, max_length=64)]


class Department(BaseModel):
    """One unit of the registry (the id is its key in ``ticketing.departments``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name_zh: str = Field(min_length=1, max_length=128)
    name_en: str = Field(min_length=1, max_length=128)
    level: Level
    # the administrative units (district / town / village names of the grid) it serves;
    # empty: every unit
    serves: list[str] = Field(default_factory=list)
    # this department's own webhook (its work-order system): every change of the tickets
    # it holds, including the ones that hand a ticket to it or take one away, signed and
    # retried like the central webhook (ticketing.deliveries, ticketing.webhooks); None: none
    webhook_url: str | None = None
    # the environment variable holding its HMAC key; None: the central
    # ``ticketing.webhook.secret_env``
    webhook_secret_env: str | None = Field(default=None, min_length=1, max_length=128)


DEFAULT_DEPARTMENTS: dict[str, Department] = {
    "command_centre": Department(name_zh="指挥中心", name_en="Command centre",
                                 level=Level.DISTRICT),
    "fire_rescue": Department(name_zh="消防救援", name_en="Fire and rescue",
                              level=Level.TOWN),
    "community_security": Department(name_zh="社区治安", name_en="Community security",
                                     level=Level.VILLAGE),
    "property_management": Department(name_zh="物业管理", name_en="Property management",
                                      level=Level.VILLAGE),
    "traffic_police": Department(name_zh="交通警察", name_en="Traffic police",
                                 level=Level.TOWN),
    "urban_management": Department(name_zh="城市管理", name_en="Urban management",
                                   level=Level.TOWN),
}
"""The registry of ``configs/default.yaml`` (the same entries): every department the
default kinds and ``default_kind`` name."""


class UnknownDepartment(ValueError):
    """A department id that is not in the registry (the message lists the valid ids)."""

    def __init__(self, department: str, valid: list[str]) -> None:
        self.department = department
        self.valid = valid
        super().__init__(f"unknown department {department!r} "
                         f"(valid: {', '.join(valid) or 'none configured'})")


def check_department(department: str, registry: Mapping[str, Department]) -> str:
    """``department`` if it is in ``registry``, else :class:`UnknownDepartment`."""
    if department not in registry:
        raise UnknownDepartment(department, sorted(registry))
    return department


def config_errors(policies: PolicyBook, *, registry: Mapping[str, Department],
                  override_departments: list[str | None]) -> list[str]:
    """Every department named by a kind, ``default_kind`` or a routing override that is
    not in ``registry``, as ``field.path: unknown department ...`` lines."""
    named: list[tuple[str, str | None]] = [
        (f"kinds.{kind}.department", p.department) for kind, p in policies.kinds.items()]
    named.append(("default_kind.department", policies.default_kind.department))
    named += [(f"ticketing.routing_overrides.{i}.department", d)
              for i, d in enumerate(override_departments)]
    errors = []
    for path, department in named:
        if department is not None and department not in registry:
            errors.append(f"{path}: {UnknownDepartment(department, sorted(registry))}")
    return errors


def check_config(policies: PolicyBook, *, registry: Mapping[str, Department],
                 override_departments: list[str | None]) -> None:
    """:func:`config_errors`, raised as one ``ValueError`` (for constructors)."""
    errors = config_errors(policies, registry=registry,
                           override_departments=override_departments)
    if errors:
        raise ValueError("; ".join(errors))
