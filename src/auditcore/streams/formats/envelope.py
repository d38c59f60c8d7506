"""auditcore's own envelope: each event exactly as the HTTP API returns it
(``GET /v1/events/{id}``), by the same pydantic model and serialiser."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from auditcore.events.envelope import AuditEvent
from auditcore.projection.records import EventRecord
from auditcore.streams.base import PayloadFormat


class EnvelopeFormat(PayloadFormat):
    name: ClassVar[str] = "envelope"

    def format(self, event: EventRecord) -> dict[str, Any]:
        """From a record alone (a record does not keep the actor's metadata)."""
        return envelope_of(event).model_dump(mode="json")

    def payload(self, event: AuditEvent, record: Callable[[], EventRecord]) -> dict[str, Any]:
        return event.model_dump(mode="json")


def envelope_of(record: EventRecord) -> AuditEvent:
    return AuditEvent.model_validate(
        {
            "event_id": record.event_id,
            "workspace_id": record.workspace_id,
            "stream_id": record.stream_id,
            "version": record.version,
            "action": record.action,
            "schema_version": record.schema_version,
            "actor": {"id": record.actor_id, "type": record.actor_type, "name": record.actor_name},
            "targets": record.targets,
            "source": record.source,
            "occurred_at": record.occurred_at,
            "recorded_at": record.recorded_at,
            "context": record.context,
            "metadata": record.metadata,
        }
    )
