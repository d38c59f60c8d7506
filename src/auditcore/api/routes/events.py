"""``/v1/events`` and ``/v1/streams``: record events, page through them, look one up."""

from __future__ import annotations

import re
from typing import Annotated, Any
from uuid import NAMESPACE_URL, UUID, uuid5

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from auditcore.api import params
from auditcore.api.deps import ReaderDep, Services, ServicesDep, Writing, request_context
from auditcore.api.errors import ApiError
from auditcore.api.json_body import load_json_body
from auditcore.api.schemas import ClientContext, EventIn, EventPage, Recorded
from auditcore.api.sessions import SessionKind
from auditcore.errors import InvalidEventError, NotFoundError
from auditcore.events.actions import located_problems
from auditcore.events.envelope import Actor, ActorType, AuditEvent, RequestContext
from auditcore.readmodel.queries import EventQuery
from auditcore.tenancy.directory import Principal

router = APIRouter(prefix="/v1", tags=["events"])

RANGE = ("since", "until", "recorded_since", "recorded_until", "text")
PAGING = ("limit", "cursor")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,255}")
_IDEMPOTENCY_NAMESPACE = uuid5(NAMESPACE_URL, "https://auditcore.dev/idempotency-key")

TIME_HELP = "ISO 8601 (UTC unless zoned) or an age such as 30m, 6h, 7d."


@router.post(
    "/events",
    status_code=201,
    response_model=Recorded,
    summary="Record one event or a batch",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {"$ref": "#/components/schemas/EventIn"},
                            {"type": "array", "items": {"$ref": "#/components/schemas/EventIn"}},
                        ]
                    }
                }
            },
        }
    },
)
async def record_events(
    request: Request,
    found: ServicesDep,
    principal: Writing,
    context: Annotated[RequestContext, Depends(request_context)],
    idempotency_key: Annotated[
        str | None,
        Header(
            description="Retrying with the same key records nothing new and returns the "
            "same ids; reusing it for different events is refused (409)."
        ),
    ] = None,
) -> Recorded:
    """Validated as a whole and stored in one transaction: all events or none. Returns after
    commit, with the stored events (they are queryable once projected, within moments)."""
    idempotency_key_checked(idempotency_key)
    session = found.sessions.open(SessionKind.WRITE, principal)
    try:
        return await _record(request, found, principal, context, idempotency_key)
    finally:
        session.close()


def idempotency_key_checked(idempotency_key: str | None) -> None:
    if idempotency_key is not None and not _IDEMPOTENCY_KEY.fullmatch(idempotency_key):
        raise ApiError(
            400, "invalid_request", "Idempotency-Key must be 1-255 visible ASCII characters"
        )


def idempotent_event_id(
    workspace_id: str, idempotency_key: str | None, place: int | str
) -> UUID | None:
    """The id of the event at ``place`` (a batch's index, or a route's own name) sent with
    ``Idempotency-Key`` (None without one): the same key and place give the same id, so a
    retry records nothing new."""
    if idempotency_key is None:
        return None
    return uuid5(_IDEMPOTENCY_NAMESPACE, f"{workspace_id}\n{idempotency_key}\n{place}")


async def _record(
    request: Request,
    found: Services,
    principal: Principal,
    context: RequestContext,
    idempotency_key: str | None,
) -> Recorded:
    body = await request.body()
    payload = load_json_body(body)
    if isinstance(payload, dict):
        items, locations = [payload], ["body"]
    elif isinstance(payload, list):
        if not payload:
            raise ApiError(422, "invalid_event", "the batch is empty: send at least one event")
        if len(payload) > found.config.max_batch:
            raise ApiError(
                413,
                "batch_too_large",
                f"{len(payload)} events in one batch; at most {found.config.max_batch} per request",
            )
        items, locations = payload, [f"body[{index}]" for index in range(len(payload))]
    else:
        raise ApiError(422, "invalid_event", "send an event object or an array of events")
    drafts, problems = _drafts(items, locations, principal, context, idempotency_key)
    stored = await record_validated_whole(found, drafts, problems, locations)
    return Recorded(ids=[event.event_id for event in stored], items=stored)


async def record_validated_whole(
    found: Services,
    drafts: list[tuple[int, dict[str, Any]]],
    problems: list[tuple[str, str]],
    locations: list[str],
) -> list[AuditEvent]:
    """Record the drafts (each with its index in the request) in one transaction, or answer
    one 422 listing every problem of every event: ``problems`` (the request's shape) and
    whatever validating each draft finds, in the order of the events."""
    indexes = [index for index, _ in drafts]
    built = [draft for _, draft in drafts]
    try:
        if problems:
            await run_in_threadpool(found.audit.build_many, built)
        else:
            return await run_in_threadpool(found.audit.record_many, built)
    except InvalidEventError as error:
        problems = problems + _relocated(error.problems, [locations[i] for i in indexes])
    problems.sort(key=lambda problem: _index(problem[0]))
    raise InvalidEventError("(request)", problems)


def _index(location: str) -> int:
    match = re.match(r"body\[(\d+)\]", location)
    return int(match.group(1)) if match else -1


def _drafts(
    items: list[Any],
    locations: list[str],
    principal: Principal,
    context: RequestContext,
    idempotency_key: str | None,
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[str, str]]]:
    """Each item that has an event's shape as ``record_many``'s draft, with its index; the
    problems of the others."""
    problems: list[tuple[str, str]] = []
    drafts = []
    for index, (item, location) in enumerate(zip(items, locations, strict=True)):
        try:
            given = EventIn.model_validate(item)
        except ValidationError as error:
            problems += located_problems(location, error)
            continue
        if given.workspace_id not in (None, principal.workspace_id):
            raise ApiError(
                403,
                "wrong_workspace",
                f"{location}.workspace_id: this API key records in workspace "
                f"{principal.workspace_id!r} only",
            )
        event_id = given.event_id or idempotent_event_id(
            principal.workspace_id, idempotency_key, index
        )
        drafts.append(
            (
                index,
                {
                    "action": given.action,
                    "workspace_id": principal.workspace_id,
                    "metadata": given.metadata,
                    "actor": given.actor
                    or Actor(id=principal.key_id, type=ActorType.API_KEY, name=principal.key_name),
                    "targets": given.targets,
                    "source": given.source,
                    "context": _merged(context, given.context),
                    **({"event_id": event_id} if event_id else {}),
                    **({"occurred_at": given.occurred_at} if given.occurred_at else {}),
                },
            )
        )
    return drafts, problems


def _merged(request: RequestContext, given: ClientContext | None) -> RequestContext:
    """What the caller says about its own end user wins; gaps are filled from this request.
    The writing key's id is always this request's (the caller cannot name one)."""
    if given is None:
        return request
    return RequestContext.model_validate(
        request.model_dump(exclude_none=True) | given.model_dump(exclude_none=True)
    )


def _relocated(problems: list[tuple[str, str]], locations: list[str]) -> list[tuple[str, str]]:
    """``record_many`` says ``[3].metadata.x``; the caller sent ``body[3].metadata.x``."""
    relocated = []
    for where, what in problems:
        match = re.match(r"\[(\d+)\]\.?(.*)", where)
        if match is None:
            relocated.append((where, what))
            continue
        base, rest = locations[int(match.group(1))], match.group(2)
        relocated.append((f"{base}.{rest}" if rest else base, what))
    return relocated


@router.get(
    "/events",
    response_model=EventPage,
    summary="Search events, newest first",
    openapi_extra={"x-filters-from": "audit_events"},
)
def list_events(
    request: Request,
    reader: ReaderDep,
    since: Annotated[str | None, Query(description=f"From this moment on. {TIME_HELP}")] = None,
    until: Annotated[str | None, Query(description=f"Before this moment. {TIME_HELP}")] = None,
    recorded_since: Annotated[
        str | None, Query(description=f"Recorded from this moment on. {TIME_HELP}")
    ] = None,
    recorded_until: Annotated[
        str | None, Query(description=f"Recorded before this moment. {TIME_HELP}")
    ] = None,
    text: Annotated[str | None, Query(description="Every word must appear.")] = None,
    limit: Annotated[str | None, Query(description="1 to 1000; default 50.")] = None,
    cursor: Annotated[str | None, Query(description="`next_cursor` of the last page.")] = None,
) -> EventPage:
    """Filter by any of the read model's filters (repeat one for any of several values)."""
    page = reader.events(event_query(request, reader))
    return EventPage(items=page.items, next_cursor=page.next_cursor)


def event_query(
    request: Request, reader: ReaderDep, reserved_extra: tuple[str, ...] = (), *, paged: bool = True
) -> EventQuery:
    """The query string as an ``EventQuery`` (``reserved_extra``: the route's own parameters;
    ``paged=False``: a route that returns every event, where a limit or cursor is an error)."""
    query = request.query_params
    model = reader.model("audit_events")
    return EventQuery(
        filters=params.filters_from(
            query, model, RANGE + (PAGING if paged else ()) + reserved_extra
        ),
        since=params.moment(query, "since"),
        until=params.moment(query, "until"),
        recorded_since=params.moment(query, "recorded_since"),
        recorded_until=params.moment(query, "recorded_until"),
        text=query.get("text"),
        limit=params.integer(query, "limit", 50),
        cursor=query.get("cursor"),
    )


@router.get("/events/{event_id}", response_model=AuditEvent, summary="One event by id")
def get_event(event_id: UUID, reader: ReaderDep) -> AuditEvent:
    """From the event store (fresh the moment it is committed). Another workspace's event id
    answers 404, exactly like an unknown one."""
    try:
        return reader.get(event_id)
    except NotFoundError:
        raise NotFoundError(f"no event {event_id} in this workspace") from None


@router.get(
    "/streams/{stream_id}/events",
    response_model=list[AuditEvent],
    summary="A stream's history, oldest first",
)
def stream_events(stream_id: UUID, reader: ReaderDep) -> list[AuditEvent]:
    """Every event of one aggregate (an incident, a monitor) in version order, from the
    event store."""
    try:
        return reader.history(stream_id)
    except NotFoundError:
        raise NotFoundError(f"no stream {stream_id} in this workspace") from None
