"""The control-plane tables (SQLAlchemy 2): workspaces and their API keys.

The event store stays on ``eventsourcing``; these are ordinary mutable rows (a key is revoked,
a workspace renamed), so they live in their own tables, in the same database as the store.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from auditcore.store.control import UtcDateTime


class Base(DeclarativeBase):
    pass


class WorkspaceRow(Base):
    __tablename__ = "auditcore_workspaces"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ApiKeyRow(Base):
    __tablename__ = "auditcore_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    """The public part of the key (shown in lists and recorded as the actor)."""
    workspace_id: Mapped[str] = mapped_column(ForeignKey("auditcore_workspaces.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    secret_sha256: Mapped[str] = mapped_column(String(64))
    """Keys are long random secrets, so a plain SHA-256 cannot be brute-forced."""
    scopes: Mapped[list[str]] = mapped_column(JSON)
    entitlements: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    """Read models' entitlements this key holds; null means every read model."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
