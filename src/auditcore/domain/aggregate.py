"""The base of audited aggregates: every change is an ``AuditEvent``, checked before it happens."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, ClassVar, Concatenate, ParamSpec, Self, TypeVar
from uuid import UUID

from pydantic import BaseModel

from auditcore.errors import DomainRuleError
from auditcore.events.actions import ActionRegistry, default_registry
from auditcore.events.envelope import AuditEvent, Target
from auditcore.events.factory import build_event
from auditcore.events.provenance import Provenance

P = ParamSpec("P")
A = TypeVar("A", bound="AuditedAggregate")
R = TypeVar("R")


def command(method: Callable[Concatenate[A, P], R]) -> Callable[Concatenate[A, P], R | None]:
    """Make a command idempotent: re-running it with an ``event_id`` this stream already
    holds does nothing (and breaks no rule), so a caller may safely retry."""

    def run_once(self: A, /, *args: P.args, **kwargs: P.kwargs) -> R | None:
        event_id = kwargs.get("event_id")
        if event_id is not None and UUID(str(event_id)) in self._event_ids:
            return None
        return method(self, *args, **kwargs)

    functools.update_wrapper(run_once, method)
    return run_once


class AuditedAggregate:
    """An event-sourced aggregate whose events are audit events.

    A stream's id is the ``event_id`` of the event that started it. Subclasses name their
    ``stream_type`` (also the target type and action prefix), the action that starts a
    stream, and implement ``apply`` to evolve state from one event.
    """

    stream_type: ClassVar[str]
    created_by_action: ClassVar[str]
    registry: ClassVar[ActionRegistry] = default_registry

    def __init__(self, stream_id: UUID, workspace_id: str) -> None:
        self.id = stream_id
        self.workspace_id = workspace_id
        self.version = 0
        self.created_on: datetime | None = None
        self.modified_on: datetime | None = None
        self._pending: list[AuditEvent] = []
        self._event_ids: set[UUID] = set()

    @property
    def display_name(self) -> str | None:
        """A human name for this aggregate as a target (shown in audit views)."""
        return None

    def apply(self, event: AuditEvent) -> None:
        """Evolve state by one event. Must not check rules: history is already true."""
        raise NotImplementedError

    @classmethod
    def _start(
        cls,
        workspace_id: str,
        action: str,
        metadata: BaseModel | Mapping[str, Any],
        provenance: Provenance,
    ) -> Self:
        event = build_event(
            cls.registry,
            action=action,
            workspace_id=workspace_id,
            stream_id=None,
            version=1,
            metadata=metadata,
            subject=[],
            provenance=provenance,
        )
        aggregate = cls(event.stream_id, workspace_id)
        # The subject target needs the state the first event creates (e.g. a name).
        aggregate._mutate(event)
        event = AuditEvent.model_validate(
            {**dict(event), "targets": (aggregate.as_target(), *event.targets)}
        )
        aggregate._pending.append(event)
        return aggregate

    def _trigger(
        self,
        action: str,
        metadata: BaseModel | Mapping[str, Any],
        provenance: Provenance,
        *,
        also_targets: Iterable[Target] = (),
    ) -> AuditEvent:
        event = build_event(
            self.registry,
            action=action,
            workspace_id=self.workspace_id,
            stream_id=self.id,
            version=self.version + 1,
            metadata=metadata,
            subject=[self.as_target(), *also_targets],
            provenance=provenance,
        )
        self._mutate(event)
        self._pending.append(event)
        return event

    def _require(self, condition: bool, error: DomainRuleError) -> None:
        if not condition:
            raise error

    def as_target(self) -> Target:
        return Target(type=self.stream_type, id=str(self.id), name=self.display_name)

    def _mutate(self, event: AuditEvent) -> None:
        self.apply(event)
        self.version = event.version
        self.created_on = self.created_on or event.occurred_at
        self.modified_on = event.occurred_at
        self._event_ids.add(event.event_id)

    def collect_events(self) -> list[AuditEvent]:
        """Hand over the events not yet saved (the library's CollectEventsProtocol)."""
        pending, self._pending = self._pending, []
        return pending

    @classmethod
    def project(cls, aggregate: Self | None, events: Iterable[AuditEvent]) -> Self | None:
        """Rebuild (or fast-forward) an aggregate from its stored events."""
        for event in events:
            if aggregate is None:
                if event.action != cls.created_by_action:
                    raise TypeError(
                        f"stream {event.stream_id} starts with {event.action!r}, "
                        f"not {cls.created_by_action!r}: it is not a {cls.__name__}"
                    )
                aggregate = cls(event.stream_id, event.workspace_id)
            aggregate._mutate(event)
        return aggregate
