"""Evaluation (考核) reports: per department, monthly, as JSON or CSV."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import PlainTextResponse

from ticketing.api.deps import Reader, StateDep, unprocessable
from ticketing.auth import Role
from ticketing.evaluation import monthly_report, report_csv

router = APIRouter(prefix="/reports", tags=["reports"])

Month = Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", examples=["2024-05"])]


@router.get("/evaluation", responses={200: {"content": {"text/csv": {}}}})
def evaluation(state: StateDep, principal: Reader, month: Month,
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
                                          f'attachment; filename="evaluation-{month}.csv"'})
    return report
