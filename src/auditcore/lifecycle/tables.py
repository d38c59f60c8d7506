"""The lifecycle's control tables (SQLAlchemy 2, in the control database beside the store):
retention policies, and one row per archived range of a workspace's log.

An archive row is written only once its file is in place, and before any of its events is
deleted; ``state`` then moves ``archived`` → ``pruned`` (every event deleted from the store)
→ ``done`` (and from the read models). ``verify`` accepts a logged event missing from the
store only inside a range that has a row here.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from auditcore.store.control import UtcDateTime

DEFAULT_POLICY = "*"
"""The policy row that applies to workspaces without one of their own."""


class Base(DeclarativeBase):
    pass


class RetentionPolicyRow(Base):
    __tablename__ = "auditcore_retention_policies"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    days: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ArchiveRow(Base):
    __tablename__ = "auditcore_archives"

    workspace_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    from_size: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    to_size: Mapped[int] = mapped_column(BigInteger)
    first_position: Mapped[int] = mapped_column(BigInteger)
    last_position: Mapped[int] = mapped_column(BigInteger)
    checkpoint_size: Mapped[int] = mapped_column(BigInteger)
    location: Mapped[str] = mapped_column(String(2000))
    sha256: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
