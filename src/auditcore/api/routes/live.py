"""``/v1/live``: new events as Server-Sent Events, while the connection stays open."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from auditcore.api import params
from auditcore.api.deps import ReaderDep, Reading, ServicesDep
from auditcore.api.live import OVERFLOW, REVOKED, LiveHub, Watcher
from auditcore.api.sessions import SessionKind, SessionResponse
from auditcore.errors import InvalidQueryError
from auditcore.readmodel.queries import live_matcher

router = APIRouter(prefix="/v1", tags=["live"])

# A store position is a bigint: 19 digits at most (ASCII only: ``str.isdigit`` accepts "²").
_EVENT_ID = re.compile(r"[0-9]{1,19}")


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
    principal: Reading,
    found: ServicesDep,
    text: Annotated[str | None, Query(description="Every word must appear.")] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            description="Resume after this event's `id` (browsers send it on reconnect): "
            "digits only; an id past the newest event resumes from the newest."
        ),
    ] = None,
) -> StreamingResponse:
    """Each new event matching the filters as ``event: audit_event`` with the event as JSON
    and its store position as ``id``. ``event: overflow`` means this client fell too far
    behind (more than the server's per-watcher buffer): reconnect with ``Last-Event-ID`` to
    resume where it stopped, losing nothing. ``event: revoked`` ends the stream of a key that
    has been revoked."""
    filters = params.filters_from(request.query_params, reader.model("audit_events"), ("text",))
    matches = live_matcher(reader.model("audit_events"), filters, text)
    after = _resume_position(last_event_id)
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
        _stream(hub, watcher, found.config.live_keepalive),
        session,
        grace=1.0,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _resume_position(last_event_id: str | None) -> int | None:
    """``Last-Event-ID`` as a store position; empty means none (browsers send none)."""
    if last_event_id is None or not last_event_id.strip():
        return None
    if not _EVENT_ID.fullmatch(last_event_id.strip()):
        raise InvalidQueryError(
            "Last-Event-ID", "must be the `id` of an event of this stream: 1 to 19 digits"
        )
    return int(last_event_id.strip())


async def _stream(hub: LiveHub, watcher: Watcher, keepalive: float) -> AsyncIterator[str]:
    try:
        yield "retry: 2000\n: following the event store\n\n"
        while True:
            item = await watcher.next(keepalive)
            if item is None:
                yield ": keep-alive\n\n"
            elif isinstance(item, list):
                yield "".join(
                    f"id: {position}\nevent: audit_event\ndata: {data.decode()}\n\n"
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
