"""auditcore: event-sourced audit trails."""

from auditcore.domain import (
    AuditedAggregate,
    Incident,
    IncidentRuleError,
    IncidentStatus,
    Monitor,
    MonitorRuleError,
    command,
)
from auditcore.errors import (
    AuditcoreError,
    ConfigurationError,
    ConflictError,
    DomainRuleError,
    EventIdReusedError,
    InvalidEventError,
    StreamNotFoundError,
    UnknownActionError,
)
from auditcore.events import (
    SYSTEM_ACTOR,
    ActionRegistry,
    Actor,
    ActorType,
    AuditEvent,
    FreeformMetadata,
    MetadataLimits,
    RequestContext,
    Target,
    acting_as,
    default_registry,
)
from auditcore.facade import AuditCore
from auditcore.store import Settings
from auditcore.store.dispatcher import DispatchBufferFullError, DispatchSettings, FullBufferPolicy

__all__ = [
    "SYSTEM_ACTOR",
    "ActionRegistry",
    "Actor",
    "ActorType",
    "AuditCore",
    "AuditEvent",
    "AuditcoreError",
    "AuditedAggregate",
    "ConfigurationError",
    "ConflictError",
    "DispatchBufferFullError",
    "DispatchSettings",
    "DomainRuleError",
    "EventIdReusedError",
    "FreeformMetadata",
    "FullBufferPolicy",
    "Incident",
    "IncidentRuleError",
    "IncidentStatus",
    "InvalidEventError",
    "MetadataLimits",
    "Monitor",
    "MonitorRuleError",
    "RequestContext",
    "Settings",
    "StreamNotFoundError",
    "Target",
    "UnknownActionError",
    "acting_as",
    "command",
    "default_registry",
]
