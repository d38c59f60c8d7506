"""``/v1/stats``: event counts per interval, grouped by action, actor or source."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from auditcore.api import params
from auditcore.api.deps import ReaderDep
from auditcore.api.routes.events import TIME_HELP
from auditcore.api.schemas import StatsOut

router = APIRouter(prefix="/v1", tags=["stats"])

_RESERVED = ("group_by", "interval", "since", "until")


@router.get(
    "/stats",
    response_model=StatsOut,
    summary="Event counts over time",
    openapi_extra={"x-filters-from": "activity_hourly"},
)
def stats(
    request: Request,
    reader: ReaderDep,
    group_by: Annotated[str, Query(description="action, actor or source.")] = "action",
    interval: Annotated[str, Query(description="minute, hour, day or auto.")] = "auto",
    since: Annotated[str | None, Query(description=f"Default: a day ago. {TIME_HELP}")] = None,
    until: Annotated[str | None, Query(description=f"Default: now. {TIME_HELP}")] = None,
) -> StatsOut:
    """Whole buckets: the range is widened to the interval's boundaries, as the answer says."""
    query = request.query_params
    result = reader.stats(
        group_by=group_by,  # type: ignore[arg-type]  # checked by stats(), a 400 naming it
        interval=interval,  # type: ignore[arg-type]
        since=params.moment(query, "since"),
        until=params.moment(query, "until"),
        filters=params.filters_from(query, reader.model("activity_hourly"), _RESERVED),
    )
    return StatsOut.model_validate(result, from_attributes=True)
