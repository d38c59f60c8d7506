"""The event envelope: one shape for every audit event, whatever its action."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from ipaddress import ip_address
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue

ACTION_PATTERN = r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$"
WORKSPACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
SOURCE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
TARGET_TYPE_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$"
ACTOR_TYPE_PATTERN = TARGET_TYPE_PATTERN


PATTERN_RULES = {
    ACTION_PATTERN: "use dotted lowercase words, e.g. 'incident.resolved'",
    WORKSPACE_PATTERN: "use 1-64 letters, digits, '_', '.', ':' or '-', starting with a letter "
    "or digit",
    SOURCE_PATTERN: "use a short lowercase word, e.g. 'api', 'dashboard', 'cli'",
    TARGET_TYPE_PATTERN: "use a word of up to 64 letters, digits, '_', '.' or '-', starting "
    "with a letter, e.g. 'incident', 'user', 'IAMUser'",
}
"""What to tell a caller whose value does not match a pattern (patterns are checked by
pydantic-core, fast; the messages are rewritten where problems are reported)."""

COLUMN_FIELDS = frozenset({"stream_id", "version", "action"})
"""Envelope fields the store keeps in columns of their own, not in the stored state."""

ACTION_MAX_LENGTH = 100
Action = Annotated[str, Field(max_length=ACTION_MAX_LENGTH, pattern=ACTION_PATTERN)]
WorkspaceId = Annotated[str, Field(pattern=WORKSPACE_PATTERN)]
Source = Annotated[str, Field(pattern=SOURCE_PATTERN)]
TargetType = Annotated[str, Field(pattern=TARGET_TYPE_PATTERN)]
PartyMetadata = Annotated[
    dict[str, JsonValue] | None,
    Field(
        # Left out of the stored JSON when absent: events without it keep their exact bytes.
        exclude_if=lambda value: value is None,
        description="Free-form details (WorkOS's actor and target metadata), bounded like "
        "an event's metadata.",
    ),
]


_IPV4 = re.compile(r"(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}")


ERASED = "[erased]"
"""What a personal field reads as once its subject was erased (``auditcore.lifecycle``)."""
UNREADABLE = "[unreadable]"
"""A sealed personal field whose stored ciphertext was altered (``auditcore verify`` says so)."""


def _ip_address(value: str) -> str:
    """An IP address, IPv6 in its canonical form (a regex settles the common IPv4 case), or
    the marker of an erased (or altered) one."""
    if _IPV4.fullmatch(value) or value in (ERASED, UNREADABLE):
        return value
    return str(ip_address(value))


IpAddress = Annotated[str, AfterValidator(_ip_address)]


def to_utc(moment: datetime) -> datetime:
    """Normalise an aware datetime to UTC; naive datetimes are ambiguous, so refuse them."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(
            "timestamp has no timezone; pass an aware datetime such as datetime.now(UTC)"
        )
    try:
        return moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00+14:00: its UTC time is before year 1
        raise ValueError(
            f"{moment.isoformat()} is outside the range events can hold (in UTC it falls "
            "outside years 1-9999)"
        ) from None


UtcDatetime = Annotated[datetime, AfterValidator(to_utc)]


class _Frozen(BaseModel):
    # No whitespace stripping: an audit record keeps exactly what it was given.
    model_config = ConfigDict(frozen=True, extra="forbid")


class ActorType(StrEnum):
    """Who can act: a person, a credential, the system itself, or another service."""

    USER = "user"
    API_KEY = "api_key"
    SYSTEM = "system"
    SERVICE = "service"


def _known_actor_type(value: str) -> str:
    """One of ``ActorType``'s values as that member (code compares with it), else as given."""
    return ActorType(value) if value in ActorType._value2member_map_ else value


class Actor(_Frozen):
    """Who did it: ``type`` is one of ``ActorType`` or any other word (``IAMUser``)."""

    id: str = Field(min_length=1, max_length=256)
    type: Annotated[str, Field(pattern=ACTOR_TYPE_PATTERN), AfterValidator(_known_actor_type)] = (
        ActorType.USER
    )
    name: str | None = Field(default=None, max_length=256)
    metadata: PartyMetadata = None


SYSTEM_ACTOR = Actor(id="system", type=ActorType.SYSTEM, name="System")


class Target(_Frozen):
    """What it was done to."""

    type: TargetType
    id: str = Field(min_length=1, max_length=256)
    name: str | None = Field(default=None, max_length=256)
    metadata: PartyMetadata = None


class RequestContext(_Frozen):
    """Where the request came from, when there was one."""

    ip: IpAddress | None = None
    user_agent: str | None = Field(default=None, max_length=1024)
    request_id: str | None = Field(default=None, max_length=256)
    api_key_id: str | None = Field(
        default=None,
        max_length=64,
        description="The API key that wrote the event, whatever actor it names (set by the "
        "HTTP API; a caller cannot set it there).",
    )
    location: str | None = Field(
        default=None,
        max_length=256,
        exclude_if=lambda value: value is None,
        description="Where the actor was, as the caller put it (WorkOS's `context.location`: "
        "usually an IP address); left out when absent.",
    )


class AuditEvent(_Frozen):
    """One immutable audit event.

    ``stream_id`` and ``version`` place it in its aggregate's history (optimistic
    concurrency); ``event_id`` identifies it globally and doubles as an idempotency key.
    ``metadata`` has already been validated against the action's registered schema.
    """

    event_id: UUID
    workspace_id: WorkspaceId
    stream_id: UUID
    version: int = Field(ge=1)
    action: Action
    schema_version: int = Field(default=1, ge=1)
    actor: Actor = SYSTEM_ACTOR
    targets: tuple[Target, ...] = ()
    source: Source = "system"
    occurred_at: UtcDatetime
    recorded_at: UtcDatetime | None = None
    context: RequestContext = RequestContext()
    metadata: dict[str, JsonValue] = Field(default_factory=dict)

    # The eventsourcing library's DomainEventProtocol.
    @property
    def originator_id(self) -> UUID:
        return self.stream_id

    @property
    def originator_version(self) -> int:
        return self.version

    @property
    def timestamp(self) -> datetime:
        return self.occurred_at

    def with_recorded_at(self, moment: datetime) -> AuditEvent:
        """This event as stored at ``moment`` (an aware UTC datetime)."""
        # model_construct: every field is already valid, and this runs once per stored event.
        return AuditEvent.model_construct(
            self.model_fields_set | {"recorded_at"}, **{**self.__dict__, "recorded_at": moment}
        )

    def stored_json(self) -> bytes:
        """The envelope as the store holds it (every field but ``COLUMN_FIELDS``), compact
        JSON in declared field order; metadata keys are sorted when it is validated."""
        return self.__pydantic_serializer__.to_json(self, exclude=_STORED_EXCLUDES)

    def summary(self) -> dict[str, Any]:
        """The envelope as JSON-compatible data, with the envelope's field names."""
        return self.model_dump(mode="json")


_STORED_EXCLUDES = dict.fromkeys(COLUMN_FIELDS, True)
