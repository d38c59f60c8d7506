"""auditcore: event-sourced audit trails.

Names are imported on first use (PEP 562): ``import auditcore`` stays cheap, so the command
line starts fast; ``from auditcore import AuditCore`` works as before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from auditcore.lazy import lazy_attributes

if TYPE_CHECKING:
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
        InvalidQueryError,
        NotFoundError,
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
    from auditcore.store.dispatcher import (
        DispatchBufferFullError,
        DispatcherDrainError,
        DispatchSettings,
        EventNotStoredError,
        FullBufferPolicy,
    )

_WHERE = {
    "AuditedAggregate": "auditcore.domain",
    "Incident": "auditcore.domain",
    "IncidentRuleError": "auditcore.domain",
    "IncidentStatus": "auditcore.domain",
    "Monitor": "auditcore.domain",
    "MonitorRuleError": "auditcore.domain",
    "command": "auditcore.domain",
    "AuditcoreError": "auditcore.errors",
    "ConfigurationError": "auditcore.errors",
    "ConflictError": "auditcore.errors",
    "DomainRuleError": "auditcore.errors",
    "EventIdReusedError": "auditcore.errors",
    "InvalidEventError": "auditcore.errors",
    "InvalidQueryError": "auditcore.errors",
    "NotFoundError": "auditcore.errors",
    "StreamNotFoundError": "auditcore.errors",
    "UnknownActionError": "auditcore.errors",
    "SYSTEM_ACTOR": "auditcore.events",
    "ActionRegistry": "auditcore.events",
    "Actor": "auditcore.events",
    "ActorType": "auditcore.events",
    "AuditEvent": "auditcore.events",
    "FreeformMetadata": "auditcore.events",
    "MetadataLimits": "auditcore.events",
    "RequestContext": "auditcore.events",
    "Target": "auditcore.events",
    "acting_as": "auditcore.events",
    "default_registry": "auditcore.events",
    "AuditCore": "auditcore.facade",
    "Settings": "auditcore.store",
    "DispatchBufferFullError": "auditcore.store.dispatcher",
    "DispatcherDrainError": "auditcore.store.dispatcher",
    "DispatchSettings": "auditcore.store.dispatcher",
    "EventNotStoredError": "auditcore.store.dispatcher",
    "FullBufferPolicy": "auditcore.store.dispatcher",
}


__getattr__ = lazy_attributes(__name__, globals(), _WHERE)


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
    "DispatcherDrainError",
    "DomainRuleError",
    "EventIdReusedError",
    "EventNotStoredError",
    "FreeformMetadata",
    "FullBufferPolicy",
    "Incident",
    "IncidentRuleError",
    "IncidentStatus",
    "InvalidEventError",
    "InvalidQueryError",
    "MetadataLimits",
    "Monitor",
    "MonitorRuleError",
    "NotFoundError",
    "RequestContext",
    "Settings",
    "StreamNotFoundError",
    "Target",
    "UnknownActionError",
    "acting_as",
    "command",
    "default_registry",
]
