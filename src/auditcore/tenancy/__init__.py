"""The control plane: workspaces (tenants) and their API keys, kept in SQL beside the store.

Names are imported on first use: the directory needs SQLAlchemy, which the command line
imports only for the commands that use it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from auditcore.lazy import lazy_attributes

if TYPE_CHECKING:
    from auditcore.tenancy.directory import Directory, IssuedKey, KeyInfo, Principal
    from auditcore.tenancy.scopes import Scope
    from auditcore.tenancy.tables import ApiKeyRow, WorkspaceRow

_WHERE = {
    "Directory": "auditcore.tenancy.directory",
    "IssuedKey": "auditcore.tenancy.directory",
    "KeyInfo": "auditcore.tenancy.directory",
    "Principal": "auditcore.tenancy.directory",
    "Scope": "auditcore.tenancy.scopes",
    "ApiKeyRow": "auditcore.tenancy.tables",
    "WorkspaceRow": "auditcore.tenancy.tables",
}


__getattr__ = lazy_attributes(__name__, globals(), _WHERE)


__all__ = [
    "ApiKeyRow",
    "Directory",
    "IssuedKey",
    "KeyInfo",
    "Principal",
    "Scope",
    "WorkspaceRow",
]
