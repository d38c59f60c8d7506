"""``/v1/live``: new events as Server-Sent Events, while the connection stays open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from auditcore.api import params
from auditcore.api.deps import ReaderDep, ServicesDep, Viewing
from auditcore.api.live import OVERFLOW, REVOKED, LiveHub, Watcher
from auditcore.api.live_ids import LiveIds
from auditcore.api.sessions import SessionKind, SessionResponse
from auditcore.events.envelope import AuditEvent
from auditcore.readmodel.queries import live_matcher

router = APIRouter(prefix="/v1", tags=["live"])


@router.get(
    "/live",
    summary="Live tail (Server-Sent Events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
    openapi_extra={"x-filters-from": "audit_events"},
)
async def live(
    request: Request,
    reader: ReaderDep,
    principal: Viewing,
    found: ServicesDep,
    text: Annotated[str | None, Query(description="Every word must appear.")] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            description="Resume after this event's `id` (browsers send it on reconnect), or "
            "`0`: from the start. Ids are opaque and valid in their own workspace only."
        ),
    ] = None,
) -> StreamingResponse:
    """Each new event matching the filters as ``event: audit_event`` with the event as JSON
    and an opaque ``id`` to resume after it (it reveals nothing of other workspaces).
    ``event: overflow`` means this client fell too far behind (more than the server's
    per-watcher buffer): reconnect with ``Last-Event-ID`` to resume where it stopped, losing
    nothing. ``event: revoked`` ends the stream of a key that
    has been revoked."""
    filters = params.filters_from(request.query_params, reader.model("audit_events"), ("text",))
    asked = live_matcher(reader.model("audit_events"), filters, text)
    # A viewer session's fixed filters, ANDed: the query can narrow them, never widen them.
    fixed = live_matcher(
        reader.model("audit_events"), {k: [v] for k, v in reader.fixed_filters.items()}, None
    )

    def matches(event: AuditEvent) -> bool:
        return asked(event) and fixed(event)

    ids = LiveIds(reader.cursor_key(), reader.workspace_id)
    after = ids.read(last_event_id)
    session = found.sessions.open(SessionKind.LIVE, principal)
    try:
        hub = found.hub
        loop = asyncio.get_running_loop()
        watcher = await asyncio.to_thread(hub.watch, reader.workspace_id, matches, after, loop)
    except BaseException:
        session.close()
        raise
    session.on_end(lambda _: watcher.end(REVOKED))
    return SessionResponse(
        _stream(hub, watcher, found.config.live_keepalive, ids),
        session,
        grace=1.0,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(
    hub: LiveHub, watcher: Watcher, keepalive: float, ids: LiveIds
) -> AsyncIterator[str]:
    try:
        yield "retry: 2000\n: following the event store\n\n"
        while True:
            item = await watcher.next(keepalive)
            if item is None:
                yield ": keep-alive\n\n"
            elif isinstance(item, list):
                yield "".join(
                    f"id: {ids.make(position)}\nevent: audit_event\ndata: {data.decode()}\n\n"
                    for position, data in item
                )
            else:
                if item == OVERFLOW:
                    yield "event: overflow\ndata: {}\n\n"
                elif item == REVOKED:
                    yield ('event: revoked\ndata: {"message": "the API key was revoked"}\n\n')
                return
    finally:
        hub.leave(watcher)
