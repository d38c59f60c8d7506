"""Point questions — one event by id, one stream's history — answered by the event store.

The store holds both answers behind indexes (the (workspace_id, event_id) index and the
(stream, version) key), always fresh: no projection lag, and no fixed per-query cost of the
analytical engine. ``auditcore.readmodel.queries.WorkspaceReader`` is the one place that
decides the route (its module header says which question goes where).

Scoping: an event is found only through its own workspace's index key, so another workspace's
id answers None exactly like an unknown one; a stream's history keeps only the events of the
asking workspace. Reading opens personal fields (or marks them erased) and upcasts, as every
read of the store does (``AuditMapper``). Retention deletes an event and its index row in one
transaction, so a pruned event is not found here from that moment (the read models drop their
rows a little later, at the end of the retention run).

Failure semantics: the store's errors propagate (``OperationalError`` when it cannot be
reached); nothing is cached, so every answer is the store's at that moment.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import cast
from uuid import UUID

from auditcore.events.envelope import AuditEvent
from auditcore.store.application import AuditApplication
from auditcore.store.mapper import AuditMapper


class PointReads(ABC):
    """Answers the questions that name one event or one stream."""

    @abstractmethod
    def event(self, workspace_id: str, event_id: UUID) -> AuditEvent | None:
        """The workspace's event with this id, or None."""

    @abstractmethod
    def history(self, workspace_id: str, stream_id: UUID) -> list[AuditEvent]:
        """The workspace's events of this stream in version order (empty: no such stream)."""


class StorePoints(PointReads):
    """Point reads through the event store's indexes (PostgreSQL or SQLite)."""

    def __init__(self, app: AuditApplication) -> None:
        self.app = app
        self.mapper = cast("AuditMapper", app.mapper)

    def event(self, workspace_id: str, event_id: UUID) -> AuditEvent | None:
        stored = self.app.event_ids.select_event((workspace_id, event_id))
        if stored is None:
            return None
        return self.mapper.to_audit_events([stored])[0]

    def history(self, workspace_id: str, stream_id: UUID) -> list[AuditEvent]:
        stored = self.app.recorder.select_events(stream_id)
        # One stream is one workspace's; filtered anyway, as the read model's answer is.
        return [
            event
            for event in self.mapper.to_audit_events(stored)
            if event.workspace_id == workspace_id
        ]
