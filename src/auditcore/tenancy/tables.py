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


class ViewerTokenRow(Base):
    """A short-lived, read-only grant to the viewer, minted by a key (``tenancy.viewer``)."""

    __tablename__ = "auditcore_viewer_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("auditcore_workspaces.id"), index=True)
    issued_by: Mapped[str] = mapped_column(ForeignKey("auditcore_api_keys.id"), index=True)
    """The minting key: revoking it ends its tokens too."""
    name: Mapped[str] = mapped_column(String(100))
    filters: Mapped[dict[str, str]] = mapped_column(JSON)
    """Fixed ``audit_events`` filters (name: value) every read of this token is narrowed by."""
    entitlements: Mapped[list[str] | None] = mapped_column(JSON, nullable=True)
    origins: Mapped[list[str]] = mapped_column(JSON)
    """Origins allowed to frame the viewer (CSP ``frame-ancestors``); empty: none."""
    link_sha256: Mapped[str] = mapped_column(String(64))
    """The one-time link secret (carried in the URL fragment)."""
    session_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The session secret the link was exchanged for; null until then."""
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    exchanged_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
