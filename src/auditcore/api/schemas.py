"""The API's request and response bodies (and so its OpenAPI schemas)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    model_validator,
)

from auditcore.events.envelope import Actor, AuditEvent, IpAddress, Source, Target


class ClientContext(BaseModel):
    """What a caller may say about its own end user's request. The key that writes the event
    (``context.api_key_id``) is the server's to say."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ip: IpAddress | None = None
    user_agent: str | None = Field(default=None, max_length=1024)
    request_id: str | None = Field(default=None, max_length=256)
    location: str | None = Field(
        default=None, max_length=256, description="Where the end user was (e.g. an address)."
    )

    @model_validator(mode="before")
    @classmethod
    def _no_key_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and "api_key_id" in data:
            raise ValueError(
                "api_key_id is set by auditcore to the API key that writes the event; leave it out"
            )
        return data


def _text_or_none(value: object) -> object:
    """A time in JSON is a string (RFC 3339), as the schema says; not a number of seconds."""
    if value is not None and not isinstance(value, str):
        raise ValueError("give the time as a string, e.g. 2026-11-25T10:00:00Z")
    return value


class EventIn(BaseModel):
    """One event to record. The workspace is the API key's; the actor defaults to the key."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "action": "incident.acknowledged",
                    "actor": {"id": "user_alice", "type": "user", "name": "Alice Martin"},
                    "targets": [{"type": "incident", "id": "inc_42"}],
                    "metadata": {},
                }
            ]
        },
    )

    action: str = Field(description="A registered action, e.g. `incident.acknowledged`.")
    event_id: UUID | None = Field(
        default=None, description="Your idempotency key for this event (default: a new id)."
    )
    occurred_at: Annotated[AwareDatetime | None, BeforeValidator(_text_or_none)] = Field(
        default=None, description="Default: now."
    )
    actor: Actor | None = None
    targets: list[Target] = Field(default_factory=list)
    source: Source = "api"
    context: ClientContext | None = Field(
        default=None,
        description="Where the request came from; fields you leave out are taken from this "
        "HTTP request (client IP, user agent, request id).",
    )
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    workspace_id: str | None = Field(
        default=None, description="Optional; if given it must be the API key's workspace."
    )


class Recorded(BaseModel):
    ids: list[UUID]
    items: list[AuditEvent]


class EventPage(BaseModel):
    items: list[AuditEvent]
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next (older) page; null on the last page."
    )


class StatsBucketOut(BaseModel):
    bucket: datetime
    key: str
    events: int


class StatsOut(BaseModel):
    interval: Literal["minute", "hour", "day"]
    group_by: Literal["action", "actor", "source"]
    since: datetime
    until: datetime
    buckets: list[StatsBucketOut]


class FilterOut(BaseModel):
    name: str
    help: str
    live: bool


class ColumnOut(BaseModel):
    name: str
    type: str


class ReadModelOut(BaseModel):
    name: str
    description: str
    kind: Literal["events", "state", "rollup"]
    columns: list[ColumnOut]
    filters: list[FilterOut]
    text_search: bool
    time_column: str | None


class RowsOut(BaseModel):
    items: list[dict[str, Any]]


class Check(BaseModel):
    ok: bool
    detail: str


class ProcessorOut(BaseModel):
    name: str
    state: Literal["ok", "degraded", "stalled", "failing"]
    """``degraded``: moving on, but some events are parked as dead letters; ``stalled``:
    events have waited, and its position has not moved, for longer than ``stall_after``."""
    position: int
    lag: int
    behind_seconds: float
    """How long the oldest event it has not processed yet has waited (0 when caught up)."""
    dead_letters: int
    error: str | None
    needs_rebuild: bool


class DeadLetterOut(BaseModel):
    """One of your events that a read model could not hold; every other event is in."""

    read_model: str
    position: int
    event_id: str
    stream_id: str
    action: str
    error: str
    failed_at: datetime
    status: Literal["parked", "retried", "skipped"]


class DeadLettersOut(BaseModel):
    items: list[DeadLetterOut]


class ReadinessSummary(BaseModel):
    """What ``/readyz`` tells anyone: ready or not."""

    ready: bool


class StreamsHealth(BaseModel):
    """The asking key's workspace's log streams, by state (a dead-lettered stream does not
    make the service unready: the events wait in the store)."""

    active: int
    paused: int
    dead_letter: int
    dead_lettered: list[str]
    """``<id> (<workspace>): <last error>`` of each stream in dead-letter."""


class Readiness(ReadinessSummary):
    """What it tells a key with the ``admin`` scope."""

    event_store: Check
    clickhouse: Check
    processors: list[ProcessorOut]
    live_watchers: int
    live_following: bool
    streams: StreamsHealth | None = None
    """None when the control database cannot be read."""


class _WorkosStrict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkosContext(_WorkosStrict):
    location: str | None = None
    user_agent: str | None = None


class WorkosEvent(_WorkosStrict):
    action: str
    occurred_at: str = Field(description="ISO 8601 with a zone, e.g. 2022-09-08T19:46:03.435Z.")
    version: int | None = Field(default=None, ge=1)
    actor: dict[str, JsonValue]
    targets: list[dict[str, JsonValue]]
    context: WorkosContext | None = None
    metadata: dict[str, JsonValue] | None = None

    @model_validator(mode="before")
    @classmethod
    def _version_is_a_number(cls, data: Any) -> Any:
        """``true`` or ``"2"`` is not a version (lax ints took them as 1 and 2); ``2.0`` is,
        as JSON Schema's ``integer`` says."""
        if isinstance(data, dict) and isinstance(data.get("version"), bool | str):
            raise ValueError("version: Input should be a valid integer")  # noqa: TRY004 - pydantic wants ValueError
        return data


class WorkosCreateEvent(_WorkosStrict):
    """WorkOS Audit Logs' Create Event body."""

    organization_id: str
    event: WorkosEvent


class WorkosCreated(BaseModel):
    success: bool = True
    id: str = Field(description="The stored event's id (auditcore's; WorkOS returns none).")
