"""``POST /audit_logs/events``: WorkOS Audit Logs' Create Event, unchanged, so an existing
integration (its SDKs, or plain HTTP) can point its base URL at auditcore.

The body is WorkOS's: ``{"organization_id": …, "event": {action, occurred_at, version, actor,
targets, context, metadata}}``; the organization is the workspace (it must be the API key's).
Every field lands on the envelope (the mapping is in the README, "WorkOS-compatible ingest"):

- ``action``, ``occurred_at``, ``metadata`` → the same fields (metadata validated against the
  action's registered schema, undeclared keys refused);
- ``version`` → ``schema_version``: validated against that version of the action's schema
  (absent: the newest), as WorkOS does;
- ``actor`` {id, type, name, metadata} and ``targets[]`` {id, type, name, metadata} → the
  envelope's actor and targets, types as given (``IAMUser``), metadata on each;
- ``context.location`` → ``context.location`` as given, and also ``context.ip`` when it is an
  IP address; ``context.user_agent`` → ``context.user_agent``.

An ``Idempotency-Key`` header makes a retry record nothing new (the event's id is derived from
the workspace and the key, in a key space of this route's own). A field WorkOS does not define is
refused, not dropped; every problem of the event comes in one 422.
"""

from __future__ import annotations

from ipaddress import ip_address
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from pydantic import ValidationError

from auditcore.api.deps import ServicesDep, Writing, request_context
from auditcore.api.errors import ApiError
from auditcore.api.json_body import load_json_body
from auditcore.api.routes.events import (
    idempotency_key_checked,
    idempotent_event_id,
    record_validated_whole,
)
from auditcore.api.schemas import WorkosCreated, WorkosCreateEvent, WorkosEvent
from auditcore.api.sessions import SessionKind
from auditcore.events.actions import located_problems
from auditcore.events.envelope import RequestContext

router = APIRouter(tags=["WorkOS-compatible"])


@router.post(
    "/audit_logs/events",
    status_code=201,
    response_model=WorkosCreated,
    summary="Record an event sent as WorkOS Audit Logs' Create Event",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/WorkosCreateEvent"}}
            },
        }
    },
)
async def create_event(
    request: Request,
    found: ServicesDep,
    principal: Writing,
    context: Annotated[RequestContext, Depends(request_context)],
    idempotency_key: Annotated[
        str | None, Header(description="A retry with the same key records nothing new.")
    ] = None,
) -> WorkosCreated:
    """The organization is the workspace: it must be this API key's."""
    idempotency_key_checked(idempotency_key)
    session = found.sessions.open(SessionKind.WRITE, principal)
    try:
        body = await request.body()
        payload = load_json_body(body)
        try:
            given = WorkosCreateEvent.model_validate(payload)
        except ValidationError as error:
            raise ApiError(
                422,
                "invalid_event",
                "not a WorkOS Create Event body",
                located_problems("body", error),
            ) from None
        if given.organization_id != principal.workspace_id:
            raise ApiError(
                403,
                "wrong_workspace",
                f"body.organization_id: this API key records in workspace "
                f"{principal.workspace_id!r} only",
            )
        draft = _draft(given.event, principal.workspace_id, context)
        # Keys of this route are a space of their own: the same key on /v1/events is another
        # event, not a conflict.
        event_id = idempotent_event_id(principal.workspace_id, idempotency_key, "workos")
        if event_id is not None:
            draft["event_id"] = event_id
        stored = await record_validated_whole(found, [(0, draft)], [], ["body.event"])
    finally:
        session.close()
    return WorkosCreated(id=str(stored[0].event_id))


def _draft(event: WorkosEvent, workspace_id: str, request: RequestContext) -> dict[str, Any]:
    """The WorkOS event as ``record_many``'s draft (the envelope validates every field)."""
    context = request.model_dump(exclude_none=True)
    if event.context is not None:
        if event.context.user_agent is not None:
            context["user_agent"] = event.context.user_agent
        if event.context.location is not None:
            context["location"] = event.context.location
            if _is_ip(event.context.location):
                context["ip"] = event.context.location
    return {
        "action": event.action,
        "workspace_id": workspace_id,
        "schema_version": event.version,
        "occurred_at": event.occurred_at,
        "actor": event.actor,
        "targets": event.targets,
        "context": context,
        "metadata": event.metadata or {},
        "source": "api",
    }


def _is_ip(text: str) -> bool:
    try:
        ip_address(text)
    except ValueError:
        return False
    return True
