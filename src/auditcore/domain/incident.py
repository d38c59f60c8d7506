"""Incidents: opened, acknowledged, re-prioritised, assigned, discussed, resolved, reopened."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal, Unpack
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from auditcore.domain.aggregate import AuditedAggregate, command
from auditcore.errors import DomainRuleError
from auditcore.events.actions import default_registry
from auditcore.events.envelope import AuditEvent, Target
from auditcore.events.provenance import Provenance

Severity = Literal["sev1", "sev2", "sev3", "sev4"]


class IncidentRuleError(DomainRuleError):
    """An incident command that its current state forbids."""


class IncidentStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class IncidentOpened(_Metadata):
    title: str = Field(min_length=1, max_length=200)
    severity: Severity
    service: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=500)


class IncidentAcknowledged(_Metadata):
    note: str | None = Field(default=None, max_length=500)


class IncidentSeverityChanged(_Metadata):
    from_severity: Severity
    to_severity: Severity
    reason: str | None = Field(default=None, max_length=500)


class IncidentAssigned(_Metadata):
    assignee_id: str = Field(min_length=1, max_length=256)
    assignee_name: str | None = Field(default=None, max_length=256)


class IncidentCommentAdded(_Metadata):
    body: str = Field(min_length=1, max_length=500)


class IncidentResolved(_Metadata):
    resolution: str = Field(min_length=1, max_length=500)
    root_cause: str | None = Field(default=None, max_length=500)


class IncidentReopened(_Metadata):
    reason: str = Field(min_length=1, max_length=500)


INCIDENT_ACTIONS: dict[str, type[BaseModel]] = {
    "incident.opened": IncidentOpened,
    "incident.acknowledged": IncidentAcknowledged,
    "incident.severity_changed": IncidentSeverityChanged,
    "incident.assigned": IncidentAssigned,
    "incident.comment_added": IncidentCommentAdded,
    "incident.resolved": IncidentResolved,
    "incident.reopened": IncidentReopened,
}
INCIDENT_TEMPLATES = {
    "incident.opened": "{actor.name} opened {metadata.severity} incident {metadata.title} on "
    "{metadata.service}",
    "incident.acknowledged": "{actor.name} acknowledged incident {targets[0].name}",
    "incident.severity_changed": "{actor.name} changed incident {targets[0].name} from "
    "{metadata.from_severity} to {metadata.to_severity}",
    "incident.assigned": "{actor.name} assigned incident {targets[0].name} to "
    "{metadata.assignee_name}",
    "incident.comment_added": "{actor.name} commented on incident {targets[0].name}: "
    "{metadata.body}",
    "incident.resolved": "{actor.name} resolved incident {targets[0].name}: {metadata.resolution}",
    "incident.reopened": "{actor.name} reopened incident {targets[0].name}: {metadata.reason}",
}
for _name, _schema in INCIDENT_ACTIONS.items():
    default_registry.register(
        _name,
        _schema,
        description=_schema.__name__,
        display_template=INCIDENT_TEMPLATES[_name],
    )


class Incident(AuditedAggregate):
    """An incident's lifecycle. Rules: acknowledge only an open incident, change nothing
    on a resolved one but comment or reopen it, and never resolve it twice."""

    stream_type = "incident"
    created_by_action = "incident.opened"

    def __init__(self, stream_id: UUID, workspace_id: str) -> None:
        super().__init__(stream_id, workspace_id)
        self.title = ""
        self.severity: Severity = "sev4"
        self.service = ""
        self.status = IncidentStatus.OPEN
        self.assignee_id: str | None = None
        self.comments = 0
        self.times_reopened = 0
        self.opened_by = ""
        self.acknowledged_at: datetime | None = None
        """The first acknowledgement: a reopened incident keeps it."""
        self.resolved_at: datetime | None = None
        """The latest resolution; none while the incident is open again."""

    @property
    def display_name(self) -> str | None:
        return self.title or None

    @classmethod
    def open(
        cls,
        workspace_id: str,
        *,
        title: str,
        severity: Severity,
        service: str,
        description: str | None = None,
        **provenance: Unpack[Provenance],
    ) -> Incident:
        metadata = {
            "title": title,
            "severity": severity,
            "service": service,
            "description": description,
        }
        return cls._start(workspace_id, "incident.opened", metadata, provenance)

    @command
    def acknowledge(self, note: str | None = None, **provenance: Unpack[Provenance]) -> None:
        self._require(
            self.status is IncidentStatus.OPEN,
            IncidentRuleError(
                f"incident {self.id} is {self.status}; only an open incident can be acknowledged"
            ),
        )
        self._trigger("incident.acknowledged", {"note": note}, provenance)

    @command
    def change_severity(
        self, severity: Severity, reason: str | None = None, **provenance: Unpack[Provenance]
    ) -> None:
        self._require_unresolved("change the severity of")
        self._require(
            severity != self.severity,
            IncidentRuleError(f"incident {self.id} is already {severity}"),
        )
        metadata = {"from_severity": self.severity, "to_severity": severity, "reason": reason}
        self._trigger("incident.severity_changed", metadata, provenance)

    @command
    def assign(
        self,
        assignee_id: str,
        assignee_name: str | None = None,
        **provenance: Unpack[Provenance],
    ) -> None:
        self._require_unresolved("assign")
        self._require(
            assignee_id != self.assignee_id,
            IncidentRuleError(f"incident {self.id} is already assigned to {assignee_id}"),
        )
        self._trigger(
            "incident.assigned",
            {"assignee_id": assignee_id, "assignee_name": assignee_name},
            provenance,
            also_targets=[Target(type="user", id=assignee_id, name=assignee_name)],
        )

    @command
    def comment(self, body: str, **provenance: Unpack[Provenance]) -> None:
        self._trigger("incident.comment_added", {"body": body}, provenance)

    @command
    def resolve(
        self,
        resolution: str,
        root_cause: str | None = None,
        **provenance: Unpack[Provenance],
    ) -> None:
        self._require(
            self.status is not IncidentStatus.RESOLVED,
            IncidentRuleError(f"incident {self.id} is already resolved; reopen it first"),
        )
        metadata = {"resolution": resolution, "root_cause": root_cause}
        self._trigger("incident.resolved", metadata, provenance)

    @command
    def reopen(self, reason: str, **provenance: Unpack[Provenance]) -> None:
        self._require(
            self.status is IncidentStatus.RESOLVED,
            IncidentRuleError(
                f"incident {self.id} is {self.status}; only a resolved incident can be reopened"
            ),
        )
        self._trigger("incident.reopened", {"reason": reason}, provenance)

    def _require_unresolved(self, verb: str) -> None:
        self._require(
            self.status is not IncidentStatus.RESOLVED,
            IncidentRuleError(f"cannot {verb} incident {self.id}: it is resolved; reopen it first"),
        )

    def apply(self, event: AuditEvent) -> None:
        data = event.metadata
        match event.action:
            case "incident.opened":
                opened = IncidentOpened.model_validate(data)
                self.title, self.severity, self.service = (
                    opened.title,
                    opened.severity,
                    opened.service,
                )
                self.opened_by = event.actor.id
            case "incident.acknowledged":
                self.status = IncidentStatus.ACKNOWLEDGED
                self.acknowledged_at = self.acknowledged_at or event.occurred_at
            case "incident.severity_changed":
                self.severity = IncidentSeverityChanged.model_validate(data).to_severity
            case "incident.assigned":
                self.assignee_id = IncidentAssigned.model_validate(data).assignee_id
            case "incident.comment_added":
                self.comments += 1
            case "incident.resolved":
                self.status = IncidentStatus.RESOLVED
                self.resolved_at = event.occurred_at
            case "incident.reopened":
                self.status = IncidentStatus.OPEN
                self.resolved_at = None
                self.times_reopened += 1
            case other:
                raise ValueError(f"an incident cannot apply {other!r}")
