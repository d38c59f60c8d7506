"""``/v1/reports``: the HTML audit report of the key's workspace for a period."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from auditcore.api import params
from auditcore.api.deps import ServicesDep, Viewing, query_limits, request_context
from auditcore.api.errors import ApiError
from auditcore.api.headers import content_security_policy
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
    description="The report is recorded in the workspace's audit trail as "
    "`auditcore.report.generated`.",
)
def report(
    request: Request,
    found: ServicesDep,
    principal: Viewing,
    context: Annotated[RequestContext, Depends(request_context)],
    since: Annotated[str, Query(description=f"Where the period starts. {TIME_HELP}")],
    until: Annotated[
        str | None,
        Query(description=f"Where it ends (default: now, or since if later). {TIME_HELP}"),
    ] = None,
) -> HTMLResponse:
    if principal.fixed_filters:
        raise ApiError(
            403,
            "not_entitled",
            "the report covers the whole workspace; this viewer session is limited to fixed "
            "filters, so it cannot open it",
        )
    query = request.query_params
    unknown = set(query.keys()) - {"since", "until"}
    if unknown:
        raise InvalidQueryError(
            sorted(unknown)[0], "unknown parameter; this route takes since, until"
        )
    start = params.moment(query, "since")
    assert start is not None  # a required parameter: FastAPI refused its absence
    # Until now, or an empty period if it starts later.
    end = params.moment(query, "until") or max(datetime.now(UTC), start)
    session = found.sessions.open(SessionKind.REPORT, principal)
    try:
        html = generate_report(
            found.audit,
            principal.workspace_id,
            start,
            end,
            actor=Actor(id=principal.key_id, type=ActorType.API_KEY, name=principal.key_name),
            source="api",
            context=context,
            entitlements=principal.entitlements,
            limits=query_limits(found.config),
        )
    finally:
        session.close()
    # The report is one self-contained file: its inline stylesheet is allowed by its hash.
    styles = tuple(re.findall(r"<style>(.*?)</style>", html, flags=re.DOTALL))
    policy = content_security_policy(found.config.frame_ancestors, styles)
    return HTMLResponse(html, headers={"Content-Security-Policy": policy})
