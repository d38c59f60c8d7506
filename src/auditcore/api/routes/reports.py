"""``/v1/reports``: the HTML audit report of the key's workspace for a period."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from auditcore.api import params
from auditcore.api.deps import Reading, ServicesDep, query_limits, request_context
from auditcore.api.routes.events import TIME_HELP
from auditcore.api.sessions import SessionKind
from auditcore.errors import InvalidQueryError
from auditcore.events.envelope import Actor, ActorType, RequestContext
from auditcore.report import generate_report

router = APIRouter(prefix="/v1", tags=["reports"])


@router.get(
    "/reports",
    response_class=HTMLResponse,
    summary="Audit report (HTML)",
    description=f"`since` (required) and `until` (default: now): {TIME_HELP} The report is "
    "recorded in the workspace's audit trail as `auditcore.report.generated`.",
)
def report(
    request: Request,
    found: ServicesDep,
    principal: Reading,
    context: Annotated[RequestContext, Depends(request_context)],
) -> HTMLResponse:
    query = request.query_params
    unknown = set(query.keys()) - {"since", "until"}
    if unknown:
        raise InvalidQueryError(
            sorted(unknown)[0], "unknown parameter; this route takes since, until"
        )
    since = params.moment(query, "since")
    if since is None:
        raise InvalidQueryError("since", "required: where the report's period starts")
    until = params.moment(query, "until") or datetime.now(UTC)
    session = found.sessions.open(SessionKind.REPORT, principal)
    try:
        html = generate_report(
            found.audit,
            principal.workspace_id,
            since,
            until,
            actor=Actor(id=principal.key_id, type=ActorType.API_KEY, name=principal.key_name),
            source="api",
            context=context,
            entitlements=principal.entitlements,
            limits=query_limits(found.config),
        )
    finally:
        session.close()
    return HTMLResponse(html)
