"""The control database: where auditcore keeps ordinary mutable rows beside the event store.

On PostgreSQL that is the store's own database and schema (one database can hold several
auditcore installations); beside a SQLite store it is ``control.sqlite`` in the same folder.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Dialect, Engine, MetaData, create_engine, text
from sqlalchemy.types import TypeDecorator

from auditcore.store.settings import Settings

# Any constant: serialises table creation between processes starting together.
_CREATE_LOCK = 0x61756469_7400


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, read back timezone-aware: PostgreSQL keeps the zone, SQLite hands back naive
    datetimes, and everything stored here is UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None or value.tzinfo is not None:
            return value  # type: ignore[no-any-return]
        return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]


def control_engine(settings: Settings) -> Engine:
    if not settings.uses_postgres:
        path = Path(settings.event_store).with_name("control.sqlite")
        path.parent.mkdir(parents=True, exist_ok=True)
        return create_engine(f"sqlite:///{path}")
    url = "postgresql+psycopg://" + settings.postgres_conninfo().split("://", 1)[1]
    schema = settings.postgres_schema
    connect_args = {"options": f"-csearch_path={schema}"} if schema else {}
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """Create ``metadata``'s tables if missing, one process at a time on PostgreSQL (processes
    starting together would otherwise race in the catalog)."""
    with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({_CREATE_LOCK})"))
        metadata.create_all(connection)
