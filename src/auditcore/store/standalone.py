"""Standalone events validated and encoded straight to their stored form, in one pass.

``build_event`` validates the metadata against its action's schema, then the envelope, and
builds an ``AuditEvent`` that the mapper encodes later. On the dispatcher's hot path that costs
far more than writing the event, so this validates envelope and metadata with a single
pydantic-core call (a model per action whose ``metadata`` field is the action's schema) and
encodes the result to exactly the bytes the mapper would store; no ``AuditEvent`` is kept.
Whatever this path refuses is handed to ``build_event``, so errors read exactly the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import orjson
from eventsourcing.persistence import Mapper
from pydantic import BaseModel, ValidationError, create_model

from auditcore.events.actions import ActionRegistry, ActionSpec
from auditcore.events.envelope import AuditEvent
from auditcore.events.factory import (
    build_standalone_event,
    party_metadata_problems,
    with_subject,
)
from auditcore.events.ids import new_event_id, stream_id_or_none
from auditcore.events.limits import occurred_at_problems
from auditcore.events.provenance import PROVENANCE_FIELDS, Provenance, with_ambient
from auditcore.events.reserved import is_reserved
from auditcore.store.codec import COLUMN_FIELDS
from auditcore.store.mapper import AuditMapper, AuditStoredEvent

_ENVELOPE_WITHOUT_METADATA = dict.fromkeys((*COLUMN_FIELDS, "metadata"), True)


class StandaloneEncoder:
    """Turns ``record``'s arguments into the stored event, as the mapper would store
    ``build_event``'s result (the same bytes: tested)."""

    def __init__(self, registry: ActionRegistry, mapper: Mapper[UUID]) -> None:
        self.registry = registry
        self.mapper = mapper
        self._envelopes: dict[tuple[str, str | None], tuple[ActionSpec, type[AuditEvent]]] = {}

    def encode(
        self,
        action: str,
        workspace_id: str,
        metadata: BaseModel | Mapping[str, Any] | None,
        provenance: Provenance,
    ) -> AuditStoredEvent:
        provenance = with_ambient(provenance)
        if is_reserved(action):  # refused, as build_event refuses it
            return self._build(action, workspace_id, metadata, provenance)
        spec = self.registry.spec(action, workspace_id if isinstance(workspace_id, str) else None)
        if not provenance.keys() <= PROVENANCE_FIELDS:
            return self._build(action, workspace_id, metadata, provenance)
        now = datetime.now(UTC)
        given_id = provenance.get("event_id")
        event_id = new_event_id() if given_id is None else given_id
        stream_id = stream_id_or_none(workspace_id, event_id)
        if stream_id is None:
            return self._build(action, workspace_id, metadata, provenance)
        fields: dict[str, Any] = {
            "event_id": event_id,
            "workspace_id": workspace_id,
            "stream_id": stream_id,
            "version": 1,
            "action": action,
            "schema_version": spec.version,
            "targets": with_subject((), provenance.get("targets", ())),
            "occurred_at": provenance.get("occurred_at", now),
            "recorded_at": now,
            "metadata": {} if metadata is None else metadata,
        }
        for optional in ("actor", "source", "context"):
            if optional in provenance:
                fields[optional] = provenance[optional]
        if isinstance(metadata, BaseModel):
            if not isinstance(metadata, spec.schema):
                return self._build(action, workspace_id, metadata, provenance)
            # Validated again from its dump, as build_event does.
            fields["metadata"] = metadata.model_dump(mode="json")
        return self._encode(spec, fields, now) or self._build(
            action, workspace_id, metadata, provenance
        )

    def _encode(
        self, spec: ActionSpec, fields: dict[str, Any], now: datetime
    ) -> AuditStoredEvent | None:
        """The event's stored form, or None if anything is wrong with it."""
        envelope = self._envelope_model(spec)
        try:
            event = envelope.model_validate(fields)
        except ValidationError:
            return None
        metadata = spec.dump(cast("BaseModel", event.metadata))
        if (
            spec.problems(metadata)
            or party_metadata_problems(self.registry, event)
            or occurred_at_problems(event.occurred_at, now, self.registry.max_future)
            or self.registry.limits.check(metadata)
            or len({(t.type, t.id) for t in event.targets}) != len(event.targets)
        ):
            return None
        try:
            # Sorted keys, as build_event leaves metadata, for deterministic bytes.
            sorted_metadata = orjson.dumps(metadata, option=orjson.OPT_SORT_KEYS)
        except TypeError:  # e.g. a lone surrogate: let the careful path say what it makes of it
            return None
        head = envelope.__pydantic_serializer__.to_json(event, exclude=_ENVELOPE_WITHOUT_METADATA)
        # The envelope's fields in declared order, metadata last.
        state = b"".join((head[:-1], b',"metadata":', sorted_metadata, b"}"))
        if self.registry.event_limits.check(event.targets, len(state)):
            return None
        state = cast("AuditMapper", self.mapper).stored_state(state, spec.name)
        return AuditStoredEvent(
            originator_id=event.stream_id,
            originator_version=1,
            topic=spec.name,
            state=state,
            event_id=event.event_id,
            workspace_id=event.workspace_id,
        )

    def _build(
        self,
        action: str,
        workspace_id: str,
        metadata: BaseModel | Mapping[str, Any] | None,
        provenance: Provenance,
    ) -> AuditStoredEvent:
        """``build_event``'s path: raises its ``InvalidEventError`` naming every problem."""
        event = build_standalone_event(self.registry, action, workspace_id, metadata, provenance)
        return cast("AuditStoredEvent", self.mapper.to_stored_event(event))

    def _envelope_model(self, spec: ActionSpec) -> type[AuditEvent]:
        key = (spec.name, spec.workspace_id)
        known = self._envelopes.get(key)
        # Compared by identity: re-registering an action (replace=True, or a new schema version
        # in the catalog) gets a new model.
        if known is not None and known[0] is spec:
            return known[1]
        model = create_model(
            f"AuditEvent[{spec.name}]", __base__=AuditEvent, metadata=(spec.model, ...)
        )
        self._envelopes[key] = (spec, model)
        return model
