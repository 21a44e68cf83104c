"""Assessment (考核) reports: per department, monthly, as JSON or CSV.

``GET /reports/assessment``; ``GET /reports/evaluation`` is the same report under the
name it had before (kept for the links and scripts that use it; deprecated)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import PlainTextResponse

from ticketing.api.deps import Reader, StateDep, unprocessable
from ticketing.assessment import monthly_report, report_csv
from ticketing.auth import Role

router = APIRouter(prefix="/reports", tags=["reports"])

Month = Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2024-05"])]


_CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {}}}}


@router.get("/assessment", responses=_CSV)
def assessment(state: StateDep, principal: Reader, month: Month,
               format: Literal["json", "csv"] = "json") -> Any:
    """Per department: on-time rate, return rate, reminders and yellow / red cards (on
    the record of the unit that held the ticket), time to accept and to resolve from when
    the unit received the work (seconds and ``"1 h 05 min"``); and operator review's own
    figures (``review``). A department token gets its own row only."""
    if principal.role is Role.INTEGRATOR:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "role integrator may not read reports")
    department = principal.department if principal.role is Role.DEPARTMENT else None
    try:
        report = monthly_report(store=state.store, month=month, as_of=state.clock(),
                                review_sla_s=state.settings.review_sla_s,
                                department=department)
    except ValueError as exc:  # e.g. year 0000
        raise unprocessable(("query", "month"), str(exc)) from None
    if format == "csv":
        return PlainTextResponse(report_csv(report), media_type="text/csv",
                                 headers={"Content-Disposition":
                                          f'attachment; filename="assessment-{month}.csv"'})
    return report


# the report's earlier path: documented since the first release, linked from saved
# console bookmarks and scripts
router.add_api_route("/evaluation", assessment, methods=["GET"], responses=_CSV,
                     deprecated=True, name="evaluation",
                     summary="Assessment (deprecated path: use /reports/assessment)")
