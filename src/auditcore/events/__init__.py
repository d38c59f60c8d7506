"""The public vocabulary of audit events: the envelope, its parts and the actions registry."""

from auditcore.events.actions import ActionRegistry, ActionSpec, FreeformMetadata, default_registry
from auditcore.events.envelope import (
    SYSTEM_ACTOR,
    Actor,
    ActorType,
    AuditEvent,
    RequestContext,
    Target,
)
from auditcore.events.factory import build_event
from auditcore.events.limits import MetadataLimits
from auditcore.events.provenance import Provenance, acting_as

__all__ = [
    "SYSTEM_ACTOR",
    "ActionRegistry",
    "ActionSpec",
    "Actor",
    "ActorType",
    "AuditEvent",
    "FreeformMetadata",
    "MetadataLimits",
    "Provenance",
    "RequestContext",
    "Target",
    "acting_as",
    "build_event",
    "default_registry",
]
