"""One way to reach ClickHouse: a server by http(s):// URL, or chDB in-process by chdb:// path.

Both give clickhouse-connect's ``Client``, so the read side runs the same SQL on either.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from auditcore.clickhouse.cluster import check_cluster
from auditcore.errors import ConfigurationError

if TYPE_CHECKING:
    from auditcore.clickhouse.ddl import Ddl

CLICKHOUSE_VARIABLE = "AUDITCORE_CLICKHOUSE"
DEFAULT_CLICKHOUSE = "chdb://.auditcore/clickhouse"
DATABASE = "auditcore"


class ClickHouseLockedError(ConfigurationError):
    """The embedded chDB directory is already open in another process."""


@dataclass(frozen=True)
class ClickHouseTarget:
    """Where the read model lives, parsed from ``AUDITCORE_CLICKHOUSE``."""

    url: str = DEFAULT_CLICKHOUSE
    cluster: str | None = None

    @property
    def embedded(self) -> bool:
        return self.url.startswith("chdb://")

    @property
    def chdb_path(self) -> Path:
        path = self.url.removeprefix("chdb://").partition("?")[0]
        return Path(path or ".auditcore/clickhouse").resolve()

    @property
    def ddl(self) -> Ddl:
        """The read side's DDL for this database (``ON CLUSTER`` when a cluster is set)."""
        # Imported here: ddl needs the read-model declarations, which need the settings,
        # which need this module.
        from auditcore.clickhouse.ddl import Ddl  # noqa: PLC0415

        return Ddl(self.database, self.cluster)

    @property
    def database(self) -> str:
        """``chdb://PATH?database=NAME`` or the URL path of a server; ``auditcore`` by default."""
        url = urlsplit(self.url)
        if self.embedded:
            return parse_qs(url.query).get("database", [DATABASE])[-1]
        return url.path.strip("/") or DATABASE

    @property
    def identity(self) -> str:
        """Which tables these are, wherever they are reached from: a cluster's replicas are
        one set of tables (followers of it may connect to different nodes)."""
        if self.embedded:
            return f"chdb:{self.chdb_path}/{self.database}"
        if self.cluster:
            return f"cluster:{self.cluster}/{self.database}"
        url = urlsplit(self.url)
        return f"{url.hostname}:{url.port or 8123}/{self.database}"

    def describe(self) -> str:
        if self.embedded:
            return f"embedded chDB at {self.chdb_path}"
        url = urlsplit(self.url)
        return f"ClickHouse at {url.scheme}://{url.hostname}:{url.port or 8123}/{self.database}"


def connect(target: ClickHouseTarget) -> Client:
    """Open a client on the target's database (one per thread: clients are not thread-safe),
    creating the database if it is missing; a configured cluster must exist there."""
    from auditcore.clickhouse.ddl import ensure_database  # noqa: PLC0415 - as in ``ddl``

    client = _connect_chdb(target) if target.embedded else _connect_server(target)
    try:
        if target.cluster:
            check_cluster(client, target.cluster, target.describe())
        ensure_database(client, target.ddl)
    except BaseException:
        client.close()
        raise
    client.database = target.database
    return client


def _connect_server(target: ClickHouseTarget) -> Client:
    if not target.url.startswith(("http://", "https://")):
        raise ConfigurationError(
            f"{CLICKHOUSE_VARIABLE}={target.url!r} is not supported: use chdb://PATH for the "
            "embedded engine or http(s)://user:password@host:port/database for a server"
        )
    url = urlsplit(target.url)
    try:
        client = clickhouse_connect.get_client(
            host=url.hostname,
            port=url.port or (8443 if url.scheme == "https" else 8123),
            username=url.username or "default",
            password=url.password or "",
            secure=url.scheme == "https",
            connect_timeout=5,
        )
    except (ClickHouseError, OSError) as error:
        raise ConfigurationError(
            f"cannot reach {target.describe()}: {error}. Check {CLICKHOUSE_VARIABLE}."
        ) from error
    return client


def _connect_chdb(target: ClickHouseTarget) -> Client:
    path = target.chdb_path
    path.mkdir(parents=True, exist_ok=True)
    try:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    except ClickHouseError as error:
        if "already initialized with path" in str(error):
            raise ConfigurationError(
                f"this process already has the embedded ClickHouse open at another path, so it "
                f"cannot also open {path}: chDB runs one engine per process. Close the other "
                "AuditCore first, or use the same chdb:// path (with ?database=NAME to separate)."
            ) from error
        raise ClickHouseLockedError(
            f"cannot open the embedded ClickHouse (chDB) at {path}: another process is using "
            "it. Only one process at a time can open a chDB directory: stop the other one "
            "(e.g. a running `auditcore project --follow` or `auditcore serve`), use another "
            f"directory with {CLICKHOUSE_VARIABLE}=chdb:///other/path, or run a ClickHouse "
            f"server and set {CLICKHOUSE_VARIABLE}=http://host:8123/auditcore. ({error})"
        ) from error
    return client


def as_utc(value: Any) -> Any:
    """ClickHouse returns DateTime64('UTC') values as naive datetimes; make them aware."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def query_dicts(
    client: Client,
    sql: str,
    parameters: dict[str, Any] | None = None,
    settings: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    result = client.query(sql, parameters=parameters or {}, settings=settings or {})
    names = result.column_names
    # Only the time columns need a zone; checking every value costs a fifth of a big export.
    moments = [
        name
        for name, kind in zip(names, result.column_types, strict=True)
        if "DateTime" in kind.name
    ]
    rows = [dict(zip(names, row, strict=True)) for row in result.result_rows]
    for row in rows:
        for name in moments:
            row[name] = as_utc(row[name])
    return rows
