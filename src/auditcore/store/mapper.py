"""Maps audit events to the library's stored events and back, upcasting old schemas on read.

The stored topic is the action (e.g. ``incident.resolved``), never a Python import path, so
renaming or moving code never orphans history, and the store can filter by action.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent

from auditcore.errors import ConfigurationError
from auditcore.events.actions import ActionRegistry
from auditcore.events.envelope import AuditEvent
from auditcore.store.codec import CanonicalJSONTranscoder, encode_envelope


@dataclass(frozen=True)
class AuditStoredEvent(StoredEvent):
    """A stored event that also carries its workspace and ``event_id``, for the idempotency
    index (event ids are unique per workspace)."""

    event_id: UUID
    workspace_id: str


def event_key_of(stored_event: StoredEvent) -> tuple[str, UUID]:
    """(workspace_id, event_id): the event-id index's key."""
    if not isinstance(stored_event, AuditStoredEvent):
        raise TypeError(
            f"expected an AuditStoredEvent from AuditMapper, got {type(stored_event).__name__}"
        )
    return stored_event.workspace_id, stored_event.event_id


class StateSealer(Protocol):
    """Encrypts an event's personal fields in its stored state, and opens them on read
    (``auditcore.lifecycle.sealing``)."""

    def seal(self, state: bytes, action: str) -> bytes: ...

    def unseal_many(self, states: Sequence[bytes]) -> list[bytes]: ...


NO_MASTER_KEY = (
    "the event store holds encrypted personal data, but no master key is set: set "
    "AUDITCORE_MASTER_KEY_FILE (a file) or AUDITCORE_MASTER_KEY"
)


class AuditMapper(Mapper[UUID]):
    """Stores the envelope as canonical JSON under its action (its personal fields sealed
    when a ``sealer`` is set)."""

    def __init__(self, registry: ActionRegistry) -> None:
        super().__init__(transcoder=CanonicalJSONTranscoder())
        self.registry = registry
        self.sealer: StateSealer | None = None

    def stored_state(self, state: bytes, action: str) -> bytes:
        """The state as stored: its personal fields sealed if encryption is on."""
        return state if self.sealer is None else self.sealer.seal(state, action)

    def readable_states(self, states: Sequence[bytes]) -> list[bytes]:
        """Stored states with their personal fields opened (or marked erased). Without a
        sealer, a sealed state is refused in one line rather than read half-empty."""
        if self.sealer is not None:
            return self.sealer.unseal_many(states)
        for state in states:
            if b'"sealed":' in state and "sealed" in orjson.loads(state):
                raise ConfigurationError(NO_MASTER_KEY)
        return list(states)

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        event = cast("AuditEvent", domain_event)
        return AuditStoredEvent(
            originator_id=event.stream_id,
            originator_version=event.version,
            topic=event.action,
            state=self.stored_state(encode_envelope(event), event.action),
            event_id=event.event_id,
            workspace_id=event.workspace_id,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        return self.to_audit_events([stored_event])[0]

    def to_audit_events(self, stored_events: Sequence[StoredEvent]) -> list[AuditEvent]:
        """Stored events as envelopes, upcast; their personal fields opened together (one
        batch of key lookups, not one per event)."""
        states = self.readable_states([stored.state for stored in stored_events])
        return [
            self._decoded(stored, state)
            for stored, state in zip(stored_events, states, strict=True)
        ]

    def _decoded(self, stored_event: StoredEvent, state: bytes) -> AuditEvent:
        stream_id = UUID(str(stored_event.originator_id))
        action, version = stored_event.topic, stored_event.originator_version
        try:
            fields: dict[str, Any] = self.transcoder.decode(state)
            fields["schema_version"], fields["metadata"] = self.registry.upcast(
                action, fields.get("schema_version", 1), fields.get("metadata", {})
            )
            return AuditEvent.model_validate(
                {**fields, "stream_id": stream_id, "version": version, "action": action}
            )
        except Exception as error:
            raise MapperDeserialisationError(
                f"cannot read stored event {action!r} of stream {stream_id} "
                f"version {version}: {error}"
            ) from error
