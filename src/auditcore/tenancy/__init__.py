"""The control plane: workspaces (tenants) and their API keys, kept in SQL beside the store."""

from auditcore.tenancy.directory import Directory, IssuedKey, KeyInfo, Principal, Scope
from auditcore.tenancy.tables import ApiKeyRow, WorkspaceRow

__all__ = [
    "ApiKeyRow",
    "Directory",
    "IssuedKey",
    "KeyInfo",
    "Principal",
    "Scope",
    "WorkspaceRow",
]
