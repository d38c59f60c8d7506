"""Stored events as projections see them: plain, fast-to-build records with their position.

Projections read the whole log, so this path skips pydantic: it decodes the canonical JSON
the mapper wrote and upcasts the metadata, nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Notification

from auditcore.events.actions import ActionRegistry


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One stored event and its position (notification id) in the store's global order."""

    position: int
    event_id: UUID
    workspace_id: str
    stream_id: UUID
    version: int
    action: str
    schema_version: int
    actor_id: str
    actor_type: str
    actor_name: str | None
    targets: list[dict[str, Any]]
    source: str
    occurred_at: datetime
    recorded_at: datetime
    context: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def stream_type(self) -> str:
        """The action's first word: ``incident`` for ``incident.opened``."""
        return self.action.partition(".")[0]


def decode_notification(registry: ActionRegistry, notification: Notification) -> EventRecord:
    state: dict[str, Any] = json.loads(notification.state)
    actor = state["actor"]
    schema_version, metadata = registry.upcast(
        notification.topic, state.get("schema_version", 1), state.get("metadata", {})
    )
    return EventRecord(
        position=notification.id,
        event_id=UUID(state["event_id"]),
        workspace_id=state["workspace_id"],
        stream_id=UUID(str(notification.originator_id)),
        version=notification.originator_version,
        action=notification.topic,
        schema_version=schema_version,
        actor_id=actor["id"],
        actor_type=actor["type"],
        actor_name=actor.get("name"),
        targets=state.get("targets", []),
        source=state.get("source", "system"),
        occurred_at=datetime.fromisoformat(state["occurred_at"]),
        recorded_at=datetime.fromisoformat(state["recorded_at"]),
        context=state.get("context") or {},
        metadata=metadata,
    )


def decode_all(
    registry: ActionRegistry, notifications: Iterable[Notification]
) -> Iterator[EventRecord]:
    for notification in notifications:
        yield decode_notification(registry, notification)
