"""``/healthz`` (the process answers) and ``/readyz`` (its stores answer, processors' lag;
the details only for a key with the ``admin`` scope: they name paths, positions and errors)."""

from __future__ import annotations

from typing import Annotated

from anyio import from_thread
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials

from auditcore.api.deps import Services, ServicesDep, authenticated, bearer
from auditcore.api.errors import ApiError
from auditcore.api.schemas import (
    Check,
    ProcessorOut,
    Readiness,
    ReadinessSummary,
    StreamsHealth,
)
from auditcore.streams.config import ACTIVE, DEAD_LETTER, PAUSED, StreamConfigs
from auditcore.tenancy.directory import Principal, Scope

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    # Answered on the event loop itself: no worker thread to wait for under load.
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness | ReadinessSummary,
    summary="Readiness: stores reachable, processors' lag",
    responses={
        503: {"model": Readiness | ReadinessSummary},
        401: {"description": "`unauthenticated`: a key was sent and is not valid."},
        403: {"description": "`missing_scope`: the key sent lacks the `admin` scope."},
        429: {"description": "Over a limit (as on every route that takes a key)."},
    },
    # The key is optional here (FastAPI appends this to the bearer requirement it declares):
    # without one, the answer is only ready or not.
    openapi_extra={"security": [{}]},
)
def readyz(
    request: Request,
    found: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> JSONResponse:
    """503 while the event store or ClickHouse cannot be reached or a processor is failing or
    stalled (events waiting and no progress for ``stall_after`` seconds, wherever its follower
    runs). A read model that parked events it cannot hold is ``degraded``: the service stays
    ready.
    Without a key the answer is only ``{"ready": …}``; the details (store, ClickHouse,
    processors' positions, lag and errors, live watchers) need a key with the ``admin``
    scope."""
    admin = None if credentials is None else _admin(request, found, credentials)
    body = _readiness(found)
    if admin is not None:
        body.streams = _streams(request, admin.workspace_id)
    status = 200 if body.ready else 503
    if admin is None:
        return JSONResponse({"ready": body.ready}, status_code=status)
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


def _admin(
    request: Request, found: Services, credentials: HTTPAuthorizationCredentials
) -> Principal:
    # This route runs in the thread pool; authentication is a coroutine of the event loop.
    principal = from_thread.run(authenticated, request, found, credentials)
    if Scope.ADMIN not in principal.scopes:
        raise ApiError(
            403,
            "missing_scope",
            f"this API key ({principal.key_id}) lacks the 'admin' scope that readiness "
            "details need; without a key, /readyz says only whether the service is ready",
        )
    return principal


def _readiness(found: Services) -> Readiness:
    audit = found.audit
    try:
        head = audit.app.recorder.max_notification_id() or 0
        store = Check(ok=True, detail=f"{audit.settings.describe_event_store()}; head {head}")
    except Exception as error:
        store = Check(ok=False, detail=f"{type(error).__name__}: {error}")
    processors: list[ProcessorOut] = []
    try:
        audit.clickhouse.command("SELECT 1")
        clickhouse = Check(ok=True, detail=audit.settings.clickhouse_target.describe())
        # Each processor's lag needs the store's head as well.
        statuses = audit.projections.status(audit.clickhouse) if store.ok else []
        processors = [
            ProcessorOut(
                name=s.name,
                state=s.state,
                position=s.position,
                lag=s.lag,
                behind_seconds=round(s.behind_seconds, 3),
                dead_letters=s.dead_letters,
                error=s.last_error,
                needs_rebuild=not s.fingerprint_matches,
            )
            for s in statuses
        ]
    except Exception as error:
        clickhouse = Check(ok=False, detail=f"{type(error).__name__}: {error}")
    ready = (
        store.ok and clickhouse.ok and not any(p.error or p.state == "stalled" for p in processors)
    )
    return Readiness(
        ready=ready,
        event_store=store,
        clickhouse=clickhouse,
        processors=processors,
        live_watchers=found.hub.watchers,
        live_following=found.hub.following,
    )


def _streams(request: Request, workspace_id: str) -> StreamsHealth | None:
    """The asking key's workspace's streams only: another's would name its streams, its
    workspace and its destinations' hosts."""
    configs: StreamConfigs = request.app.state.stream_configs
    try:
        streams = [info for info in configs.streams() if info.workspace_id == workspace_id]
    except Exception:
        return None
    dead = [info for info in streams if info.state == DEAD_LETTER]
    return StreamsHealth(
        active=sum(info.state == ACTIVE for info in streams),
        paused=sum(info.state == PAUSED for info in streams),
        dead_letter=len(dead),
        dead_lettered=[f"{i.id} ({i.workspace_id}): {i.last_error}" for i in dead],
    )
