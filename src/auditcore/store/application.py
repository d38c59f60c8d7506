"""The eventsourcing application that owns the event store."""

from __future__ import annotations

from typing import cast
from uuid import UUID

from eventsourcing.application import Application
from eventsourcing.persistence import Mapper
from eventsourcing.utils import Environment, EnvType

from auditcore.events.actions import ActionRegistry
from auditcore.store.mapper import AuditMapper
from auditcore.store.recorders import EventIdIndex
from auditcore.store.settings import Settings


class AuditApplication(Application[UUID]):
    """The library's Application, configured only by ``Settings`` (never by stray
    environment variables) and storing envelopes through ``AuditMapper``."""

    name = "auditcore"

    def __init__(self, settings: Settings, registry: ActionRegistry) -> None:
        self.settings = settings
        self.registry = registry
        super().__init__(env=settings.eventsourcing_env())

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        return Environment(name, dict(env or {}))

    def construct_mapper(self) -> Mapper[UUID]:
        return AuditMapper(self.registry)

    @property
    def event_ids(self) -> EventIdIndex:
        return cast("EventIdIndex", self.recorder)
