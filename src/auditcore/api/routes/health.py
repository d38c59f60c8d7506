"""``/healthz`` (the process answers) and ``/readyz`` (its stores answer, processors' lag)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from auditcore.api.deps import ServicesDep
from auditcore.api.schemas import Check, ProcessorOut, Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    # Answered on the event loop itself: no worker thread to wait for under load.
    return {"status": "ok"}


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: stores reachable, processors' lag",
    responses={503: {"model": Readiness}},
)
def readyz(found: ServicesDep) -> JSONResponse:
    """503 while the event store or ClickHouse cannot be reached or a processor is failing or
    stalled (events waiting and no progress for ``stall_after`` seconds, wherever its follower
    runs). A read model that parked events it cannot hold is ``degraded``: the service stays
    ready."""
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
    body = Readiness(
        ready=ready,
        event_store=store,
        clickhouse=clickhouse,
        processors=processors,
        live_watchers=found.hub.watchers,
        live_following=found.hub.following,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)
