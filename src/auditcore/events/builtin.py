"""auditcore's own audit events: workspaces created, keys issued and revoked, audit data
exported. They are recorded in the workspace they concern, like any other event."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from auditcore.events.actions import ActionRegistry


class _Metadata(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkspaceCreated(_Metadata):
    name: str = Field(max_length=200)


class ApiKeyIssued(_Metadata):
    key_id: str = Field(max_length=32)
    name: str = Field(max_length=100)
    scopes: list[Literal["read", "write", "admin", "embed"]]
    entitlements: list[str] | None = None


class ApiKeyRevoked(_Metadata):
    key_id: str = Field(max_length=32)
    name: str = Field(max_length=100)


class ExportCreated(_Metadata):
    format: Literal["csv", "jsonl"]
    filters: dict[str, list[str]] = Field(default_factory=dict)
    filters_omitted: int | None = None
    """Filter values left out of ``filters`` to keep within the metadata bounds (the export
    applied them all)."""
    since: str | None = None
    until: str | None = None
    recorded_since: str | None = None
    recorded_until: str | None = None
    text: str | None = None
    proof: bool | None = None
    """A proof export: the log's positions ``from_size`` to ``to_size`` (exclusive)."""
    from_size: int | None = None
    to_size: int | None = None


class ReportGenerated(_Metadata):
    since: str
    until: str
    events: int


class AuthFailuresThrottled(_Metadata):
    """A client address failed to authenticate too often and is refused for a while."""

    address: str = Field(max_length=64, description="The address, or the IPv6 /64 it is in.")
    failures: int
    window_seconds: float
    first_failure_at: str
    last_failure_at: str
    key_ids: list[str] = Field(
        default_factory=list, max_length=20, description="Key ids the tokens named."
    )


class ActionSchemaRegistered(_Metadata):
    """An action's metadata schema was registered for the workspace (as JSON Schema)."""

    name: str = Field(max_length=100)
    version: int


class SubjectErased(_Metadata):
    """A subject's data keys were destroyed: its personal fields read as erased from now on."""

    subject_id: str = Field(max_length=256)
    requested_at: str


def register_builtin_actions(registry: ActionRegistry) -> None:
    def add(name: str, schema: type[BaseModel], template: str) -> None:
        registry.register(name, schema, display_template=template)

    add("auditcore.workspace.created", WorkspaceCreated, "Workspace {metadata.name} was created")
    add(
        "auditcore.api_key.created",
        ApiKeyIssued,
        "{actor.name} issued API key {metadata.name} ({metadata.key_id})",
    )
    add(
        "auditcore.api_key.revoked",
        ApiKeyRevoked,
        "{actor.name} revoked API key {metadata.name} ({metadata.key_id})",
    )
    add(
        "auditcore.export.created",
        ExportCreated,
        "{actor.name} exported events as {metadata.format}",
    )
    add(
        "auditcore.report.generated",
        ReportGenerated,
        "{actor.name} generated a report of {metadata.events} events",
    )
    add(
        "auditcore.auth.failures_throttled",
        AuthFailuresThrottled,
        "{metadata.failures} failed authentications from {metadata.address}: throttled",
    )
    add(
        "auditcore.action_schema.registered",
        ActionSchemaRegistered,
        "{actor.name} registered version {metadata.version} of action {metadata.name}",
    )
    add("auditcore.subject.erased", SubjectErased, "{actor.name} erased a subject's personal data")
