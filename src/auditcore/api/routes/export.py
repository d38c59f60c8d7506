"""``/v1/events/export``: a query's whole result as a CSV or JSON Lines download."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse

from auditcore.api.deps import (
    ReaderDep,
    Services,
    ServicesDep,
    Viewing,
    principal_reader,
    query_limits,
    request_context,
)
from auditcore.api.errors import ApiError
from auditcore.api.routes.events import TIME_HELP, event_query
from auditcore.api.routes.integrity import MAX_SIZE
from auditcore.api.sessions import Session, SessionKind, SessionResponse
from auditcore.errors import InvalidQueryError
from auditcore.events.envelope import Actor, ActorType, RequestContext
from auditcore.integrity.export import zip_chunks
from auditcore.readmodel.export import ExportFormat, export_chunks, record_export
from auditcore.readmodel.queries import EventQuery
from auditcore.tenancy.directory import Principal, Scope

router = APIRouter(prefix="/v1", tags=["export"])

_DONE = object()
_AHEAD = 4


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
    principal: Viewing,
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
    proof: Annotated[
        bool,
        Query(
            description="A ZIP of the workspace's log between two tree sizes (JSON Lines in "
            "log order), its signed checkpoint and what an auditor needs to check offline "
            "that it is exactly those events (no filters then)."
        ),
    ] = False,
    from_size: Annotated[
        int | None,
        Query(ge=0, le=MAX_SIZE, description="With proof: the first log position (default 0)."),
    ] = None,
    to_size: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_SIZE,
            description="With proof: a signed checkpoint's size (default the latest).",
        ),
    ] = None,
) -> StreamingResponse:
    """Every matching event, newest first, streamed (any size, flat memory). The export is
    recorded in the workspace's audit trail as ``auditcore.export.created``. A workspace may
    run a few exports at once (429 beyond); revoking the key cuts its exports off."""
    if proof:
        if Scope.READ not in principal.scopes:
            raise ApiError(
                403, "missing_scope", "a proof export is the whole log: it needs a read key"
            )
        return _proof_export(request, found, principal, context, from_size, to_size)
    try:
        output = ExportFormat(format)
    except ValueError:
        raise InvalidQueryError("format", "use csv or jsonl") from None
    query = replace(event_query(request, reader, _RESERVED, paged=False), limit=1)
    # The slot first: a workspace at its limit is refused before any query runs.
    session = found.sessions.open(SessionKind.EXPORT, principal)
    try:
        reader.events(query)  # Refuse a bad query now, with a 400, not halfway through.
        record_export(
            found.audit,
            principal.workspace_id,
            query,
            output,
            actor=Actor(id=principal.key_id, type=ActorType.API_KEY, name=principal.key_name),
            source="api",
            context=context,
        )
    except BaseException:
        session.close()
        raise
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    filename = f"audit-{principal.workspace_id}-{stamp}.{output.value}"
    limits = found.config.limits
    # Each page is bounded by its page size, not by the API's result-rows limit.
    settings = query_limits(found.config) | {
        "max_result_rows": 0,
        "max_threads": limits.export_threads,
    }

    def pages() -> Iterator[bytes]:
        reader = principal_reader(found, principal, settings)
        return export_chunks(reader, query, output, page_size=limits.export_page_rows)

    # Cut at once when the key is revoked: a truncated body, never a "complete" short file.
    return SessionResponse(
        _produced(found, pages, session),
        session,
        grace=0.0,
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
    session = found.sessions.open(SessionKind.EXPORT, principal)
    try:
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
    except BaseException:
        session.close()
        raise
    filename = f"audit-{principal.workspace_id}-{bundle.from_size}-{bundle.to_size}-proof.zip"
    return SessionResponse(
        _produced(found, lambda: zip_chunks(bundle, integrity.log_key), session),
        session,
        grace=0.0,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _produced(
    found: Services, make_pages: Callable[[], Iterator[bytes]], session: Session
) -> AsyncIterator[bytes]:
    """The export runs in a thread of its own (one ClickHouse client per thread), at most
    ``_AHEAD`` pages ahead of the client; a client hanging up, or the session ending, stops
    it. The hand-over holds no worker thread of the server while the client is slow."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[object] = asyncio.Queue()
    room = threading.Semaphore(_AHEAD)
    cancelled = threading.Event()
    session.on_end(lambda _: cancelled.set())

    def hand_over(item: object) -> bool:
        while not room.acquire(timeout=0.5):
            if cancelled.is_set():
                return False
        try:
            loop.call_soon_threadsafe(chunks.put_nowait, item)
        except RuntimeError:  # The server has stopped: nobody is reading.
            return False
        return True

    def produce() -> None:
        try:
            pages = make_pages()
            while not cancelled.is_set():
                with found.pacer.step(cancelled):  # bulk work: within the CPU budget
                    chunk = next(pages, None)
                if chunk is None:
                    hand_over(_DONE)
                    return
                if not hand_over(chunk):
                    return
        except Exception as error:
            hand_over(error)

    thread = threading.Thread(target=produce, name="auditcore-export", daemon=True)
    thread.start()
    try:
        while True:
            item = await chunks.get()
            room.release()
            if item is _DONE:
                return
            if isinstance(item, Exception):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        cancelled.set()
