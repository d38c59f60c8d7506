"""Where the event store lives: one setting, a ``postgresql://`` URL or a SQLite file path."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from eventsourcing.utils import get_topic

from auditcore.clickhouse.cluster import CLUSTER_VARIABLE, SHARDED_VARIABLE
from auditcore.clickhouse.connection import (
    CLICKHOUSE_VARIABLE,
    DEFAULT_CLICKHOUSE,
    ClickHouseTarget,
)
from auditcore.errors import ConfigurationError
from auditcore.store.recorders import PostgresAuditRecorder, SQLiteAuditRecorder

EVENT_STORE_VARIABLE = "AUDITCORE_EVENT_STORE"
STALL_VARIABLE = "AUDITCORE_STALL_AFTER"
DEFAULT_HOME = Path(".auditcore")
DEFAULT_EVENT_STORE = str(DEFAULT_HOME / "events.sqlite")


@dataclass(frozen=True)
class Settings:
    """auditcore's configuration.

    ``event_store`` is a ``postgresql://user:password@host:port/dbname`` URL (the primary,
    production store; ``?schema=NAME``, ``?pool_size=N``, ``?max_overflow=N`` (connections
    opened beyond the pool under load, 10 by default) and ``?connect_timeout=SECONDS`` are
    optional) or a
    path to a SQLite file (the embedded default, ``./.auditcore/events.sqlite``).

    ``clickhouse`` is where the read models live: ``chdb://PATH`` (the embedded default,
    ``./.auditcore/clickhouse``) or ``http(s)://user:password@host:port/database``;
    ``clickhouse_cluster`` names a cluster for ``ON CLUSTER`` DDL and Replicated engines;
    ``clickhouse_sharded`` (``AUDITCORE_CLICKHOUSE_SHARDED=1``) puts every table of a cluster
    of several shards behind a ``Distributed`` table, rows sharded by workspace.

    ``stall_after``: seconds after which a read model with events waiting and no progress is
    reported ``stalled`` (``/readyz`` answers 503); ``AUDITCORE_STALL_AFTER``, 60 by default.
    """

    event_store: str = DEFAULT_EVENT_STORE
    clickhouse: str = DEFAULT_CLICKHOUSE
    clickhouse_cluster: str | None = None
    stall_after: float = 60.0
    clickhouse_sharded: bool = False

    def __post_init__(self) -> None:
        if not self.stall_after > 0:
            raise ConfigurationError(
                f"{STALL_VARIABLE} (stall_after) must be a number of seconds above 0, "
                f"not {self.stall_after!r}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        stall_after = environ.get(STALL_VARIABLE) or "60"
        try:
            seconds = float(stall_after)
        except ValueError:
            raise ConfigurationError(
                f"{STALL_VARIABLE}={stall_after!r} is not a number of seconds"
            ) from None
        return cls(
            event_store=environ.get(EVENT_STORE_VARIABLE) or DEFAULT_EVENT_STORE,
            clickhouse=environ.get(CLICKHOUSE_VARIABLE) or DEFAULT_CLICKHOUSE,
            clickhouse_cluster=environ.get(CLUSTER_VARIABLE) or None,
            stall_after=seconds,
            clickhouse_sharded=_flag(environ, SHARDED_VARIABLE),
        )

    @property
    def clickhouse_target(self) -> ClickHouseTarget:
        return ClickHouseTarget(self.clickhouse, self.clickhouse_cluster, self.clickhouse_sharded)

    @property
    def uses_postgres(self) -> bool:
        return self.event_store.startswith(("postgresql://", "postgres://"))

    def describe_event_store(self) -> str:
        """The store's address without its password, for messages and logs."""
        if not self.uses_postgres:
            return f"SQLite at {self.event_store}"
        url = urlsplit(self.event_store)
        return f"PostgreSQL at {url.hostname}:{url.port or 5432}{url.path}"

    @property
    def postgres_schema(self) -> str:
        """The ``?schema=`` option of a PostgreSQL URL ("" for the server's default)."""
        return parse_qs(urlsplit(self.event_store).query).get("schema", [""])[-1]

    def postgres_conninfo(self) -> str:
        """The URL as libpq takes it (auditcore's own ``?options`` removed)."""
        return urlsplit(self.event_store)._replace(query="").geturl()

    def eventsourcing_env(self) -> dict[str, str]:
        """The eventsourcing library's settings for this store."""
        if self.uses_postgres:
            return self._postgres_env()
        if self.event_store.startswith(("sqlite://", "mysql://", "http://", "https://")):
            raise ConfigurationError(
                f"{EVENT_STORE_VARIABLE}={self.event_store!r} is not supported: use a "
                "postgresql:// URL or a plain path to a SQLite file"
            )
        path = Path(self.event_store)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ConfigurationError(
                f"cannot create the directory for the SQLite event store {path}: {error}"
            ) from error
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(path),
            "SQLITE_LOCK_TIMEOUT": "10",
            "APPLICATION_RECORDER_TOPIC": get_topic(SQLiteAuditRecorder),
        }

    def _postgres_env(self) -> dict[str, str]:
        url = urlsplit(self.event_store)
        dbname = unquote(url.path.lstrip("/"))
        if not url.hostname or not dbname:
            raise ConfigurationError(
                f"{EVENT_STORE_VARIABLE} must name a host and a database, "
                "e.g. postgresql://postgres@127.0.0.1:5432/auditcore"
            )
        options = {key: values[-1] for key, values in parse_qs(url.query).items()}
        supported = ("schema", "pool_size", "max_overflow", "connect_timeout")
        unknown = set(options) - set(supported)
        if unknown:
            raise ConfigurationError(
                f"unknown option(s) {sorted(unknown)} in {EVENT_STORE_VARIABLE}; "
                f"supported: {', '.join(supported)}"
            )
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": dbname,
            "POSTGRES_HOST": url.hostname,
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_SCHEMA": options.get("schema", ""),
            "POSTGRES_POOL_SIZE": options.get("pool_size", "5"),
            "POSTGRES_MAX_OVERFLOW": options.get("max_overflow", "10"),
            "POSTGRES_CONNECT_TIMEOUT": options.get("connect_timeout", "5"),
            "POSTGRES_LOCK_TIMEOUT": "30",
            # Its insert path skips the table lock: readers following the log would miss events.
            "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
            "APPLICATION_RECORDER_TOPIC": get_topic(PostgresAuditRecorder),
        }


def _flag(environ: Mapping[str, str], name: str) -> bool:
    value = (environ.get(name) or "0").strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise ConfigurationError(f"{name}={value!r}: use 1 or 0")
    return value in ("1", "true", "yes")
