"""Stored events as projections see them: plain, fast-to-build records with their position.

Projections read the whole log, so this path skips pydantic: it decodes the canonical JSON
the mapper wrote and upcasts the metadata, nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson

from auditcore.events.actions import ActionRegistry
from auditcore.projection.log import LoggedEvent


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
    actor_metadata: dict[str, Any] = field(default_factory=dict)
    """WorkOS's ``actor.metadata``: kept so that nothing of the envelope is lost downstream."""

    @property
    def stream_type(self) -> str:
        """The action's first word: ``incident`` for ``incident.opened``."""
        return self.action.partition(".")[0]


def decode_logged(registry: ActionRegistry, logged: LoggedEvent) -> EventRecord:
    state: dict[str, Any] = orjson.loads(logged.state)
    actor = state["actor"]
    schema_version, metadata = registry.upcast(
        logged.action, state.get("schema_version", 1), state.get("metadata", {})
    )
    return EventRecord(
        position=logged.position,
        event_id=UUID(state["event_id"]),
        workspace_id=state["workspace_id"],
        stream_id=UUID(logged.stream_id),
        version=logged.version,
        action=logged.action,
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
        actor_metadata=actor.get("metadata") or {},
    )


def upcast_state(registry: ActionRegistry, event: LoggedEvent) -> LoggedEvent:
    """``event`` with its metadata upcast to its action's current schema, so SQL-computed
    read models see current metadata."""
    state = orjson.loads(event.state)
    stored_version = state.get("schema_version", 1)
    version, metadata = registry.upcast(event.action, stored_version, state.get("metadata", {}))
    if version == stored_version:
        return event
    state |= {"schema_version": version, "metadata": metadata}
    return event._replace(state=orjson.dumps(state, option=orjson.OPT_SORT_KEYS))
