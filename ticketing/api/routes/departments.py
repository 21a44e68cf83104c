"""The department registry and the grid's administrative units: where work orders can go
(``dispatch``, ``confirm`` and ``reclassify`` accept only these ids)."""

from __future__ import annotations

from fastapi import APIRouter

from geo.admin import Level
from ticketing.api.deps import Reader, StateDep
from ticketing.api.models import AdminUnit, DepartmentPublic, DepartmentRegistry

router = APIRouter(tags=["departments"])


@router.get("/departments", response_model=DepartmentRegistry)
def departments(state: StateDep, _principal: Reader) -> DepartmentRegistry:
    """Every registered department (id, Chinese and English name, level, the units it
    serves, whether it has its own webhook, the kinds routed to it) and the grid's
    districts, towns and villages with their cell counts."""
    settings, policies = state.settings, state.policies
    routed: dict[str, list[str]] = {}
    for kind in sorted(policies.kinds):
        routed.setdefault(policies.kinds[kind].department, []).append(kind)
    items = [DepartmentPublic(id=d, name_zh=dep.name_zh, name_en=dep.name_en,
                              level=dep.level, serves=list(dep.serves),
                              has_webhook=dep.webhook_url is not None,
                              kinds=routed.get(d, []))
             for d, dep in sorted(settings.departments.items())]
    units: list[AdminUnit] = []
    if state.grid is not None:
        for district, towns in sorted(state.grid.hierarchy().items()):
            d_cells = sum(len(c) for villages in towns.values() for c in villages.values())
            if district:
                units.append(AdminUnit(level=Level.DISTRICT, name=district, parent=None,
                                       cells=d_cells))
            for town, villages in sorted(towns.items()):
                if town:
                    units.append(AdminUnit(level=Level.TOWN, name=town,
                                           parent=district or None,
                                           cells=sum(len(c) for c in villages.values())))
                for village, cells in sorted(villages.items()):
                    if village:
                        units.append(AdminUnit(level=Level.VILLAGE, name=village,
                                               parent=town or None, cells=len(cells)))
    return DepartmentRegistry(departments=items, admin_units=units)
