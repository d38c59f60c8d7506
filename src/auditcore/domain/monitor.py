"""Monitors: created, configured, paused, resumed, went down, recovered, deleted."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, Unpack
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from auditcore.domain.aggregate import AuditedAggregate, command
from auditcore.errors import DomainRuleError
from auditcore.events.actions import default_registry
from auditcore.events.envelope import AuditEvent
from auditcore.events.provenance import Provenance

MonitorKind = Literal["http", "tcp", "ping", "dns"]
Region = Literal["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-east"]


class MonitorRuleError(DomainRuleError):
    """A monitor command that its current state forbids."""


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class MonitorCreated(_Metadata):
    name: str = Field(min_length=1, max_length=200)
    kind: MonitorKind
    url: HttpUrl
    interval_seconds: int = Field(ge=10, le=86_400)
    regions: list[Region] = Field(min_length=1, max_length=6)


class MonitorConfigured(_Metadata):
    # The rule below, stated for JSON Schema (the API's OpenAPI document) too.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}}
                for name in ("name", "url", "interval_seconds", "regions")
            ]
        }
    )

    name: str | None = Field(default=None, min_length=1, max_length=200)
    url: HttpUrl | None = None
    interval_seconds: int | None = Field(default=None, ge=10, le=86_400)
    regions: list[Region] | None = Field(default=None, min_length=1, max_length=6)

    @model_validator(mode="after")
    def _changes_something(self) -> MonitorConfigured:
        if not self.model_dump(exclude_none=True):
            raise ValueError("give at least one of name, url, interval_seconds, regions")
        return self


class MonitorPaused(_Metadata):
    reason: str | None = Field(default=None, max_length=500)


class MonitorResumed(_Metadata):
    pass


class MonitorWentDown(_Metadata):
    region: Region
    error: str = Field(min_length=1, max_length=500)
    status_code: int | None = Field(default=None, ge=100, le=599)


class MonitorRecovered(_Metadata):
    region: Region
    downtime_seconds: float = Field(ge=0)


class MonitorDeleted(_Metadata):
    reason: str | None = Field(default=None, max_length=500)


MONITOR_ACTIONS: dict[str, type[BaseModel]] = {
    "monitor.created": MonitorCreated,
    "monitor.configured": MonitorConfigured,
    "monitor.paused": MonitorPaused,
    "monitor.resumed": MonitorResumed,
    "monitor.went_down": MonitorWentDown,
    "monitor.recovered": MonitorRecovered,
    "monitor.deleted": MonitorDeleted,
}
MONITOR_TEMPLATES = {
    "monitor.created": "{actor.name} created {metadata.kind} monitor {targets[0].name} for "
    "{metadata.url}",
    "monitor.configured": "{actor.name} reconfigured monitor {targets[0].name}",
    "monitor.paused": "{actor.name} paused monitor {targets[0].name}",
    "monitor.resumed": "{actor.name} resumed monitor {targets[0].name}",
    "monitor.went_down": "Monitor {targets[0].name} went down in {metadata.region}: "
    "{metadata.error}",
    "monitor.recovered": "Monitor {targets[0].name} recovered in {metadata.region}",
    "monitor.deleted": "{actor.name} deleted monitor {targets[0].name}",
}
for _name, _schema in MONITOR_ACTIONS.items():
    default_registry.register(
        _name,
        _schema,
        description=_schema.__name__,
        display_template=MONITOR_TEMPLATES[_name],
    )


class Monitor(AuditedAggregate):
    """An uptime monitor. Rules: a deleted monitor accepts nothing; pause only a running
    monitor and resume only a paused one; a paused monitor neither goes down nor recovers;
    it goes down only when up and recovers only when down."""

    stream_type = "monitor"
    created_by_action = "monitor.created"

    def __init__(self, stream_id: UUID, workspace_id: str) -> None:
        super().__init__(stream_id, workspace_id)
        self.name = ""
        self.kind: MonitorKind = "http"
        self.url = ""
        self.interval_seconds = 60
        self.regions: list[str] = []
        self.paused = False
        self.down = False
        self.deleted = False
        self.down_since: datetime | None = None
        self.outages = 0
        self.downtime_seconds = 0.0

    @property
    def display_name(self) -> str | None:
        return self.name or None

    @property
    def state(self) -> str:
        """``deleted``, else ``paused``, else ``down``, else ``up``."""
        if self.deleted:
            return "deleted"
        if self.paused:
            return "paused"
        return "down" if self.down else "up"

    @classmethod
    def create(
        cls,
        workspace_id: str,
        *,
        name: str,
        url: str,
        kind: MonitorKind = "http",
        interval_seconds: int = 60,
        regions: list[Region] | None = None,
        **provenance: Unpack[Provenance],
    ) -> Monitor:
        metadata = {
            "name": name,
            "kind": kind,
            "url": url,
            "interval_seconds": interval_seconds,
            "regions": regions or ["eu-west", "us-east"],
        }
        return cls._start(workspace_id, "monitor.created", metadata, provenance)

    @command
    def configure(
        self,
        *,
        name: str | None = None,
        url: str | None = None,
        interval_seconds: int | None = None,
        regions: list[Region] | None = None,
        **provenance: Unpack[Provenance],
    ) -> None:
        self._require_not_deleted("configure")
        metadata = {
            "name": name,
            "url": url,
            "interval_seconds": interval_seconds,
            "regions": regions,
        }
        self._trigger("monitor.configured", metadata, provenance)

    @command
    def pause(self, reason: str | None = None, **provenance: Unpack[Provenance]) -> None:
        self._require_not_deleted("pause")
        self._require(not self.paused, MonitorRuleError(f"monitor {self.id} is already paused"))
        self._trigger("monitor.paused", {"reason": reason}, provenance)

    @command
    def resume(self, **provenance: Unpack[Provenance]) -> None:
        self._require_not_deleted("resume")
        self._require(self.paused, MonitorRuleError(f"monitor {self.id} is not paused"))
        self._trigger("monitor.resumed", {}, provenance)

    @command
    def went_down(
        self,
        region: Region,
        error: str,
        status_code: int | None = None,
        **provenance: Unpack[Provenance],
    ) -> None:
        self._require_running("report an outage of")
        self._require(not self.down, MonitorRuleError(f"monitor {self.id} is already down"))
        metadata = {"region": region, "error": error, "status_code": status_code}
        self._trigger("monitor.went_down", metadata, provenance)

    @command
    def recovered(self, region: Region, **provenance: Unpack[Provenance]) -> None:
        self._require_running("report a recovery of")
        self._require(self.down, MonitorRuleError(f"monitor {self.id} is not down"))
        recovered_at = provenance.get("occurred_at") or datetime.now(UTC)
        assert self.down_since is not None  # set by the went_down event that made it down
        downtime = max(0.0, (recovered_at - self.down_since).total_seconds())
        metadata = {"region": region, "downtime_seconds": round(downtime, 3)}
        self._trigger("monitor.recovered", metadata, provenance)

    @command
    def delete(self, reason: str | None = None, **provenance: Unpack[Provenance]) -> None:
        self._require_not_deleted("delete")
        self._trigger("monitor.deleted", {"reason": reason}, provenance)

    def _require_not_deleted(self, verb: str) -> None:
        self._require(
            not self.deleted,
            MonitorRuleError(f"cannot {verb} monitor {self.id}: it has been deleted"),
        )

    def _require_running(self, verb: str) -> None:
        self._require_not_deleted(verb)
        self._require(
            not self.paused,
            MonitorRuleError(f"cannot {verb} monitor {self.id}: it is paused"),
        )

    def apply(self, event: AuditEvent) -> None:
        data = event.metadata
        match event.action:
            case "monitor.created":
                created = MonitorCreated.model_validate(data)
                self.name, self.kind = created.name, created.kind
                self.url, self.interval_seconds = str(created.url), created.interval_seconds
                self.regions = list(created.regions)
            case "monitor.configured":
                changes = MonitorConfigured.model_validate(data)
                self.name = changes.name or self.name
                self.url = str(changes.url) if changes.url else self.url
                self.interval_seconds = changes.interval_seconds or self.interval_seconds
                self.regions = list(changes.regions) if changes.regions else self.regions
            case "monitor.paused":
                self.paused = True
            case "monitor.resumed":
                self.paused = False
            case "monitor.went_down":
                self.down = True
                self.down_since = event.occurred_at
                self.outages += 1
            case "monitor.recovered":
                self.down = False
                self.down_since = None
                self.downtime_seconds += MonitorRecovered.model_validate(data).downtime_seconds
            case "monitor.deleted":
                self.deleted = True
            case other:
                raise ValueError(f"a monitor cannot apply {other!r}")
