"""``/v1/streams`` (log streams): list, add, show, pause, resume, replay and remove this
workspace's streams, for a key with the ``admin`` scope.

Every answer shows credentials as ``***`` (they are accepted on creation only). Another
workspace's stream id reads as unknown (404). Bad configurations are 422 with the part that is
wrong; a name already used in the workspace is 409.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from auditcore.api.deps import Administering, ServicesDep
from auditcore.api.errors import ApiError
from auditcore.errors import InvalidQueryError
from auditcore.streams.config import (
    LIMITS,
    StreamConfigError,
    StreamConfigs,
    StreamExistsError,
    StreamInfo,
    StreamSpec,
)
from auditcore.timespec import parse_moment

router = APIRouter(prefix="/v1", tags=["streams"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    422: {"description": "`invalid_stream`: the configuration is not valid."},
    409: {"description": "`stream_exists`: the workspace has a stream of that name."},
}


class LogStreamIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    kind: str = Field(default="webhook", max_length=32)
    """The destination: ``webhook``, …"""
    settings: dict[str, Any]
    """The destination's settings (a webhook: ``url``, ``secret`` (``whsec_…``),
    ``timeout_seconds``)."""
    format: str = Field(default="envelope", max_length=32)
    filters: dict[str, list[str]] = Field(default_factory=dict)
    """The event list's filters (``action``, ``actor_id``, ``target_type``, …): only matching
    events are delivered."""
    max_events: int = Field(default=500, ge=LIMITS["max_events"][0], le=LIMITS["max_events"][1])
    max_bytes: int = Field(default=1_000_000, ge=LIMITS["max_bytes"][0], le=LIMITS["max_bytes"][1])
    max_wait: float = Field(default=1.0, ge=LIMITS["max_wait"][0], le=LIMITS["max_wait"][1])
    max_attempts: int = Field(default=8, ge=LIMITS["max_attempts"][0], le=LIMITS["max_attempts"][1])
    from_: str | None = Field(default=None, alias="from", max_length=64)
    """Deliver from the first event recorded at or after this time (ISO 8601 or an age such as
    7d); absent: only events recorded from now on."""


class ReplayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    from_: str = Field(alias="from", max_length=64)
    """ISO 8601 or an age such as 7d."""


class LogStreamOut(BaseModel):
    id: str
    workspace_id: str
    name: str
    kind: str
    settings: dict[str, Any]
    """Credentials are shown as ``***``."""
    format: str
    filters: dict[str, list[str]]
    max_events: int
    max_bytes: int
    max_wait: float
    max_attempts: int
    state: str
    """``active`` · ``paused`` · ``dead_letter`` (after ``max_attempts`` failed attempts, or
    a refusal retrying cannot help: ``resume`` or ``replay`` to deliver again)"""
    attempts: int
    """Failed attempts of the batch now due."""
    last_error: str | None
    delivered: int
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime
    encrypted: bool
    """Whether the credentials are stored encrypted under the installation's master key."""


def configs_of(request: Request) -> StreamConfigs:
    """The app's one ``StreamConfigs`` (``create_app`` makes it and closes it)."""
    configs: StreamConfigs = request.app.state.stream_configs
    return configs


def _out(info: StreamInfo) -> LogStreamOut:
    return LogStreamOut.model_validate(info.public())


def _moment(text: str) -> datetime:
    try:
        return parse_moment(text)
    except ValueError as error:
        raise InvalidQueryError("from", str(error)) from None


@router.get("/streams", response_model=list[LogStreamOut], summary="This workspace's log streams")
def list_streams(request: Request, principal: Administering) -> list[LogStreamOut]:
    return [_out(info) for info in configs_of(request).streams(principal.workspace_id)]


@router.post(
    "/streams",
    status_code=201,
    response_model=LogStreamOut,
    summary="Add a log stream",
    responses=_ERRORS,
)
async def add_stream(
    body: LogStreamIn, request: Request, found: ServicesDep, principal: Administering
) -> LogStreamOut:
    """Starts delivering wherever the streamer runs (`auditcore serve`, `auditcore streams
    run`). Credentials are accepted here only: no answer shows them again."""
    start = None if body.from_ is None else _moment(body.from_)
    spec = StreamSpec(
        name=body.name,
        kind=body.kind,
        settings=body.settings,
        format=body.format,
        filters=body.filters,
        max_events=body.max_events,
        max_bytes=body.max_bytes,
        max_wait=body.max_wait,
        max_attempts=body.max_attempts,
        start=start,
    )

    def add() -> StreamInfo:
        head = found.audit.app.recorder.max_notification_id() or 0
        return configs_of(request).add(principal.workspace_id, spec, head)

    try:
        return _out(await run_in_threadpool(add))
    except StreamConfigError as error:
        raise ApiError(422, "invalid_stream", str(error)) from None
    except StreamExistsError as error:
        raise ApiError(409, "stream_exists", str(error)) from None


@router.get("/streams/{log_stream_id}", response_model=LogStreamOut, summary="One log stream")
def get_stream(log_stream_id: str, request: Request, principal: Administering) -> LogStreamOut:
    return _out(configs_of(request).get(principal.workspace_id, log_stream_id))


@router.post(
    "/streams/{log_stream_id}/pause", response_model=LogStreamOut, summary="Pause a log stream"
)
def pause_stream(log_stream_id: str, request: Request, principal: Administering) -> LogStreamOut:
    """Delivery stops; the position is kept."""
    return _out(configs_of(request).pause(principal.workspace_id, log_stream_id))


@router.post(
    "/streams/{log_stream_id}/resume", response_model=LogStreamOut, summary="Resume a log stream"
)
def resume_stream(log_stream_id: str, request: Request, principal: Administering) -> LogStreamOut:
    """Deliver again from where it stopped (out of dead-letter too)."""
    return _out(configs_of(request).resume(principal.workspace_id, log_stream_id))


@router.post(
    "/streams/{log_stream_id}/replay",
    response_model=LogStreamOut,
    summary="Deliver again from a moment on",
)
def replay_stream(
    log_stream_id: str, body: ReplayIn, request: Request, principal: Administering
) -> LogStreamOut:
    """From the first event (in commit order) recorded at or after ``from``; the stream is
    active again."""
    since = _moment(body.from_)
    return _out(configs_of(request).replay(principal.workspace_id, log_stream_id, since))


@router.delete("/streams/{log_stream_id}", status_code=204, summary="Remove a log stream")
def remove_stream(log_stream_id: str, request: Request, principal: Administering) -> Response:
    configs_of(request).remove(principal.workspace_id, log_stream_id)
    return Response(status_code=204)
