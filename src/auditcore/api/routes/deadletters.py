"""``/v1/dead-letters``: this workspace's events that a read model could not hold."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request

from auditcore.api import params
from auditcore.api.deps import ReaderDep, Reading, ServicesDep
from auditcore.api.schemas import DeadLetterOut, DeadLettersOut
from auditcore.errors import InvalidQueryError, NotEntitledError
from auditcore.projection.deadletters import LetterStatus

router = APIRouter(prefix="/v1", tags=["read models"])


@router.get("/dead-letters", response_model=DeadLettersOut, summary="Events a read model refused")
def dead_letters(
    request: Request,
    reader: ReaderDep,
    found: ServicesDep,
    principal: Reading,  # a key's: a viewer session's fixed filters cannot narrow letters
    status: Annotated[
        str | None, Query(description="parked (default), retried, skipped or all.")
    ] = None,
    limit: Annotated[str | None, Query(description="1 to 1000; default 100.")] = None,
) -> DeadLettersOut:
    """Your events that a read model parked because it cannot hold them (with the error),
    in the read models this key may read. Every other event is in; an operator retries or
    skips these (`auditcore projections dead-letters`)."""
    query = request.query_params
    unknown = sorted(set(query.keys()) - {"status", "limit"})
    if unknown:
        raise InvalidQueryError(unknown[0], "unknown parameter; this route takes: limit, status")
    wanted = params.integer(query, "limit", 100)
    if not 1 <= wanted <= 1000:
        raise InvalidQueryError("limit", "must be between 1 and 1000")
    chosen: LetterStatus | None = LetterStatus.PARKED
    if status == "all":
        chosen = None
    elif status is not None:
        try:
            chosen = LetterStatus(status)
        except ValueError:
            raise InvalidQueryError("status", "use parked, retried, skipped or all") from None
    readable = []
    for model in reader.models:
        try:
            readable.append(reader.model(model.name).name)
        except NotEntitledError:
            continue
    letters = found.audit.projections.dead_letters(
        reader.client, readable, status=chosen, workspace_id=reader.workspace_id, limit=wanted
    )
    return DeadLettersOut(
        items=[
            DeadLetterOut(
                read_model=letter.model,
                position=letter.position,
                event_id=letter.event_id,
                stream_id=letter.stream_id,
                action=letter.action,
                error=letter.error,
                failed_at=letter.failed_at,
                status=letter.status.value,
            )
            for letter in letters
        ]
    )
