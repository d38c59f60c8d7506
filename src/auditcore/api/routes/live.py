"""``/v1/live``: new events as Server-Sent Events, while the connection stays open."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from auditcore.api import params
from auditcore.api.deps import ReaderDep, ServicesDep
from auditcore.api.live import LiveHub, Watcher
from auditcore.errors import InvalidQueryError
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
    found: ServicesDep,
    text: Annotated[str | None, Query(description="Every word must appear.")] = None,
    last_event_id: Annotated[
        str | None,
        Header(description="Resume after this event's `id` (browsers send it on reconnect)."),
    ] = None,
) -> StreamingResponse:
    """Each new event matching the filters as ``event: audit_event`` with the event as JSON
    and its store position as ``id``. ``event: overflow`` means this client fell too far
    behind: reconnect with ``Last-Event-ID`` to resume where it stopped, losing nothing."""
    filters = params.filters_from(request.query_params, reader.model("audit_events"), ("text",))
    matches = live_matcher(reader.model("audit_events"), filters, text)
    after = None
    if last_event_id is not None:
        if not last_event_id.isdigit():
            raise InvalidQueryError("Last-Event-ID", "must be the id of an event of this stream")
        after = int(last_event_id)
    hub = found.hub
    loop = asyncio.get_running_loop()
    watcher = await asyncio.to_thread(hub.watch, reader.workspace_id, matches, after, loop)
    return StreamingResponse(
        _stream(hub, watcher, found.config.live_keepalive),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _stream(hub: LiveHub, watcher: Watcher, keepalive: float) -> AsyncIterator[str]:
    try:
        yield "retry: 2000\n: following the event store\n\n"
        while True:
            try:
                delivery = await asyncio.wait_for(watcher.queue.get(), keepalive)
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if delivery is None:
                yield "event: overflow\ndata: {}\n\n"
                return
            position, event = delivery
            yield f"id: {position}\nevent: audit_event\ndata: {event.model_dump_json()}\n\n"
    finally:
        hub.leave(watcher)
