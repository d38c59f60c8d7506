"""Domain aggregates whose every change is an audit event."""

from auditcore.domain.aggregate import AuditedAggregate, command
from auditcore.domain.incident import Incident, IncidentRuleError, IncidentStatus
from auditcore.domain.monitor import Monitor, MonitorRuleError

__all__ = [
    "AuditedAggregate",
    "Incident",
    "IncidentRuleError",
    "IncidentStatus",
    "Monitor",
    "MonitorRuleError",
    "command",
]
