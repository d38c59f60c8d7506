"""The control plane's own audit events: who created a workspace, issued or revoked a key."""

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
    scopes: list[Literal["read", "write"]]
    entitlements: list[str] | None = None


class ApiKeyRevoked(_Metadata):
    key_id: str = Field(max_length=32)
    name: str = Field(max_length=100)


def register_control_plane_actions(registry: ActionRegistry) -> None:
    registry.register("auditcore.workspace.created", WorkspaceCreated)
    registry.register("auditcore.api_key.created", ApiKeyIssued)
    registry.register("auditcore.api_key.revoked", ApiKeyRevoked)
