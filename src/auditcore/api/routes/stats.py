"""``/v1/stats``: event counts per interval, grouped by action, actor or source."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request

from auditcore.api import params
from auditcore.api.deps import ReaderDep
from auditcore.api.routes.events import TIME_HELP
from auditcore.api.schemas import StatsBucketOut, StatsOut
from auditcore.errors import InvalidQueryError

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
    if group_by not in ("action", "actor", "source"):
        raise InvalidQueryError("group_by", "use action, actor or source")
    if interval not in ("minute", "hour", "day", "auto"):
        raise InvalidQueryError("interval", "use minute, hour, day or auto")
    chosen_group: Literal["action", "actor", "source"] = group_by  # type: ignore[assignment]
    chosen_interval: Literal["minute", "hour", "day", "auto"] = interval  # type: ignore[assignment]
    result = reader.stats(
        group_by=chosen_group,
        interval=chosen_interval,
        since=params.moment(query, "since"),
        until=params.moment(query, "until"),
        filters=params.filters_from(query, reader.model("activity_hourly"), _RESERVED),
    )
    return StatsOut(
        interval=result.interval,
        group_by=result.group_by,
        since=result.since,
        until=result.until,
        buckets=[
            StatsBucketOut(bucket=b.bucket, key=b.key, events=b.events) for b in result.buckets
        ],
    )
