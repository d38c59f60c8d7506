"""``/v1/events/export``: a query's whole result as a CSV or JSON Lines download."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from auditcore.api.deps import ReaderDep, Reading, Services, ServicesDep, request_context
from auditcore.api.routes.events import TIME_HELP, event_query
from auditcore.errors import InvalidQueryError
from auditcore.events.envelope import Actor, ActorType, RequestContext
from auditcore.readmodel.export import ExportFormat, export_chunks, record_export
from auditcore.readmodel.queries import EventQuery
from auditcore.tenancy.directory import Principal

router = APIRouter(prefix="/v1", tags=["export"])

_DONE = object()


@router.get(
    "/events/export",
    summary="Export events as CSV or JSON Lines",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
    openapi_extra={"x-filters-from": "audit_events"},
)
def export_events(
    request: Request,
    reader: ReaderDep,
    found: ServicesDep,
    principal: Reading,
    context: Annotated[RequestContext, Depends(request_context)],
    format: Annotated[str, Query(description="csv (spreadsheet-safe) or jsonl.")] = "csv",
    since: Annotated[str | None, Query(description=f"From this moment on. {TIME_HELP}")] = None,
    until: Annotated[str | None, Query(description=f"Before this moment. {TIME_HELP}")] = None,
    recorded_since: Annotated[
        str | None, Query(description=f"Recorded from this moment on. {TIME_HELP}")
    ] = None,
    recorded_until: Annotated[
        str | None, Query(description=f"Recorded before this moment. {TIME_HELP}")
    ] = None,
    text: Annotated[str | None, Query(description="Every word must appear.")] = None,
) -> StreamingResponse:
    """Every matching event, newest first, streamed (any size, flat memory). The export is
    recorded in the workspace's audit trail as ``auditcore.export.created``."""
    try:
        output = ExportFormat(format)
    except ValueError:
        raise InvalidQueryError("format", "use csv or jsonl") from None
    query = replace(event_query(request, reader, reserved_extra=("format",)), limit=1)
    reader.events(query)  # Refuse a bad query now, with a 400, not halfway through a download.
    record_export(
        found.audit,
        principal.workspace_id,
        query,
        output,
        actor=Actor(id=principal.key_id, type=ActorType.API_KEY, name=principal.key_name),
        source="api",
        context=context,
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    filename = f"audit-{principal.workspace_id}-{stamp}.{output.value}"
    return StreamingResponse(
        _produced(found, principal, query, output),
        media_type=output.media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _produced(
    found: Services, principal: Principal, query: EventQuery, output: ExportFormat
) -> AsyncIterator[bytes]:
    """The export runs in a thread of its own (one ClickHouse client per thread), a few pages
    ahead of the client at most; a client hanging up stops it."""
    chunks: queue.Queue[object] = queue.Queue(maxsize=4)
    cancelled = threading.Event()

    def produce() -> None:
        try:
            reader = found.audit.reader(principal.workspace_id, entitlements=principal.entitlements)
            for chunk in export_chunks(reader, query, output):
                while not cancelled.is_set():
                    try:
                        chunks.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if cancelled.is_set():
                    return
            chunks.put(_DONE)
        except Exception as error:
            chunks.put(error)

    thread = threading.Thread(target=produce, name="auditcore-export", daemon=True)
    thread.start()
    try:
        while True:
            item = await asyncio.to_thread(chunks.get)
            if item is _DONE:
                return
            if isinstance(item, Exception):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        cancelled.set()
