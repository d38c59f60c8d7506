"""Maps audit events to the library's stored events and back, upcasting old schemas on read.

The stored topic is the action (e.g. ``incident.resolved``), never a Python import path, so
renaming or moving code never orphans history, and the store can filter by action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import Mapper, MapperDeserialisationError, StoredEvent

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


class AuditMapper(Mapper[UUID]):
    """Stores the envelope as canonical JSON under its action."""

    def __init__(self, registry: ActionRegistry) -> None:
        super().__init__(transcoder=CanonicalJSONTranscoder())
        self.registry = registry

    def to_stored_event(self, domain_event: DomainEventProtocol[UUID]) -> StoredEvent:
        event = cast("AuditEvent", domain_event)
        return AuditStoredEvent(
            originator_id=event.stream_id,
            originator_version=event.version,
            topic=event.action,
            state=encode_envelope(event),
            event_id=event.event_id,
            workspace_id=event.workspace_id,
        )

    def to_domain_event(self, stored_event: StoredEvent) -> DomainEventProtocol[UUID]:
        stream_id = UUID(str(stored_event.originator_id))
        action, version = stored_event.topic, stored_event.originator_version
        try:
            fields: dict[str, Any] = self.transcoder.decode(stored_event.state)
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
