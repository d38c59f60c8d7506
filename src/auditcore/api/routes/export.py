"""``/v1/events/export``: a query's whole result as a CSV or JSON Lines download."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from auditcore.api.deps import ReaderDep, Reading, Services, ServicesDep, request_context
from auditcore.api.routes.events import TIME_HELP, event_query
from auditcore.errors import InvalidQueryError
from auditcore.events.envelope import Actor, ActorType, RequestContext
from auditcore.integrity.export import zip_chunks
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
    text: Annotated[str | None, Query(description="Every word must appear.")] = None,
    proof: Annotated[
        bool,
        Query(
            description="A ZIP of the workspace's log between two tree sizes (JSON Lines in "
            "log order), its signed checkpoint and what an auditor needs to check offline "
            "that it is exactly those events (no filters then)."
        ),
    ] = False,
    from_size: Annotated[
        int | None, Query(ge=0, description="With proof: the first log position (default 0).")
    ] = None,
    to_size: Annotated[
        int | None,
        Query(ge=1, description="With proof: a signed checkpoint's size (default the latest)."),
    ] = None,
) -> StreamingResponse:
    """Every matching event, newest first, streamed (any size, flat memory). The export is
    recorded in the workspace's audit trail as ``auditcore.export.created``."""
    if proof:
        return _proof_export(request, found, principal, context, from_size, to_size)
    try:
        output = ExportFormat(format)
    except ValueError:
        raise InvalidQueryError("format", "use csv or jsonl") from None
    query = replace(event_query(request, reader, reserved_extra=_RESERVED), limit=1)
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

    def chunks() -> Iterator[bytes]:
        reader = found.audit.reader(principal.workspace_id, entitlements=principal.entitlements)
        return export_chunks(reader, query, output)

    return StreamingResponse(
        _produced(chunks),
        media_type=output.media_type,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


_RESERVED = ("format", "proof", "from_size", "to_size")


def _proof_export(
    request: Request,
    found: Services,
    principal: Principal,
    context: RequestContext,
    from_size: int | None,
    to_size: int | None,
) -> StreamingResponse:
    """The workspace's log between two tree sizes, as a ZIP an auditor checks offline."""
    extra = sorted(set(request.query_params) - {*_RESERVED})
    if extra or request.query_params.get("format", "jsonl") != "jsonl":
        raise InvalidQueryError(
            extra[0] if extra else "format",
            "a proof export is the whole log between two tree sizes, as JSON Lines: give "
            "from_size and to_size, not filters",
        )
    integrity = found.audit.integrity
    bundle = integrity.export(principal.workspace_id, from_size or 0, to_size)
    record_export(
        found.audit,
        principal.workspace_id,
        EventQuery(),
        ExportFormat.JSONL,
        actor=Actor(id=principal.key_id, type=ActorType.API_KEY, name=principal.key_name),
        source="api",
        context=context,
        proof_range=(bundle.from_size, bundle.to_size),
    )
    filename = f"audit-{principal.workspace_id}-{bundle.from_size}-{bundle.to_size}-proof.zip"
    return StreamingResponse(
        _produced(lambda: zip_chunks(bundle, integrity.log_key)),
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _produced(make_chunks: Callable[[], Iterator[bytes]]) -> AsyncIterator[bytes]:
    """The export runs in a thread of its own (one ClickHouse client per thread), a few pages
    ahead of the client at most; a client hanging up stops it."""
    chunks: queue.Queue[object] = queue.Queue(maxsize=4)
    cancelled = threading.Event()

    def produce() -> None:
        try:
            for chunk in make_chunks():
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
