"""Every DDL statement and mutation the read side sends, built in one place, for one server
or for a cluster; and the read side's own bookkeeping tables (positions, dead letters).

On a cluster (``AUDITCORE_CLICKHOUSE_CLUSTER``) every statement that changes the schema or
deletes rows carries ``ON CLUSTER``, so each replica makes the same change (a rebuild's
``EXCHANGE TABLES`` on one node only would leave the others answering from the old table),
and each ``*MergeTree`` engine becomes its ``Replicated`` variant at
``/clickhouse/tables/{uuid}/{shard}``: the table's UUID, which ClickHouse gives every replica
of an ``ON CLUSTER`` create alike, so each table version (a rebuild's ``__next`` included)
has a ZooKeeper path of its own and never meets the path of one being dropped. Drops are
``SYNC``, so a dropped table's path is released when the statement returns.

On a cluster of several shards (``sharded``), each table is a local table (``LOCAL_SUFFIX``,
the Replicated engine above) on every node and a ``Distributed`` table over it by the plain
name, rows sharded by workspace (the bookkeeping tables on one shard); mutations, swaps and
replica syncs act on the local tables, which hold the rows.

Names are qualified with the database, so every node runs the statement on the same table
whatever its default database. Tables are created only where missing
(``create_missing``): ``ON CLUSTER`` DDL waits for every node, so it is not sent when there
is nothing to do (each start would otherwise hang on a node that is down).

Failure semantics: on a cluster, ClickHouse runs each statement on every node through its
distributed DDL queue and raises if a node fails it or does not answer within
``distributed_ddl_task_timeout``; the nodes that ran it keep the change (ClickHouse has no
cluster-wide transaction). Every statement here is safe to run again: ``IF [NOT] EXISTS``
where the syntax allows, and a rebuild resumes from what exists.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from clickhouse_connect.driver.client import Client

from auditcore.errors import ConfigurationError
from auditcore.readmodel.model import Column, Table

TRACKING_TABLE = "auditcore_tracking"
DEAD_LETTERS_TABLE = "auditcore_dead_letters"
PROBE_SUFFIX = "__probe"
LOCAL_SUFFIX = "__local"
"""On a sharded cluster, the table on each node holding that shard's rows; the table by the
plain name is a ``Distributed`` table over it."""
WORKSPACE_SHARDING_KEY = "cityHash64(workspace_id)"
"""Where a row goes on a sharded cluster: by workspace, so a workspace's rows, and every
version of a state table's row, are on one shard."""
FIRST_SHARD_KEY = "0"
"""The bookkeeping tables' sharding key: every row on one shard (positions and dead letters
are read whole by every processor)."""
ZOOKEEPER_PATH = "'/clickhouse/tables/{uuid}/{shard}', '{replica}'"
_MERGE_TREE = re.compile(r"^(\w*MergeTree)\s*(?:\((.*)\))?\s*$", re.S)


def quote(name: str) -> str:
    """An identifier in backquotes (a backquote or backslash in it escaped)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass(frozen=True)
class Ddl:
    """Statements for the read side's ``database``, on ``cluster`` when one is configured;
    ``sharded``: every table is a ``Distributed`` table over a local one (``LOCAL_SUFFIX``)."""

    database: str
    cluster: str | None = None
    sharded: bool = False

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {quote(self.cluster)}" if self.cluster else ""

    def name(self, table: str) -> str:
        return f"{quote(self.database)}.{quote(table)}"

    def create_database(self) -> str:
        return f"CREATE DATABASE IF NOT EXISTS {quote(self.database)}{self.on_cluster}"

    def data_table(self, name: str) -> str:
        """The table holding ``name``'s rows on the node: ``name`` itself, or its local table
        on a sharded cluster (what mutations, swaps and replica syncs act on)."""
        return name + LOCAL_SUFFIX if self.sharded else name

    def create(self, name: str, table: Table, sharding_key: str) -> list[str]:
        """The table, and on a sharded cluster the ``Distributed`` table over it (the
        statements in order; each ``IF NOT EXISTS``)."""
        if not self.sharded or not _MERGE_TREE.match(table.engine):
            return [self.create_table(name, table)]
        local = self.data_table(name)
        distributed = (
            f"CREATE TABLE IF NOT EXISTS {self.name(name)}{self.on_cluster} AS {self.name(local)}\n"
            f"ENGINE = Distributed({_literal(self.cluster or '')}, {_literal(self.database)}, "
            f"{_literal(local)}, {sharding_key})"
        )
        return [self.create_table(local, table), distributed]

    def create_table(self, name: str, table: Table) -> str:
        """``CREATE TABLE IF NOT EXISTS``; on a cluster, with the Replicated variant of a
        ``*MergeTree`` engine (so every replica holds the same rows)."""
        columns = [
            f"    {quote(column.name)} {column.type}" + (f" {column.codec}" if column.codec else "")
            for column in table.columns
        ]
        body = ",\n".join([*columns, *(f"    {index}" for index in table.indexes)])
        engine = replicated(table.engine) if self.cluster else table.engine
        sql = (
            f"CREATE TABLE IF NOT EXISTS {self.name(name)}{self.on_cluster} (\n{body}\n)\n"
            f"ENGINE = {engine}"
        )
        if table.order_by:
            sql += f"\nORDER BY ({', '.join(table.order_by)})"
        if table.partition_by:
            sql += f"\nPARTITION BY {table.partition_by}"
        if table.ttl:
            sql += f"\nTTL {table.ttl}"
        if table.settings:
            sql += "\nSETTINGS " + ", ".join(
                f"{key} = {value}" for key, value in table.settings.items()
            )
        return sql

    def create_probe(self, name: str, table: Table) -> str:
        """A ``Null`` table with ``table``'s columns: inserting into it computes and checks
        the rows and keeps nothing, so a processor can find which events ClickHouse refuses
        without writing any. On every node, as the table it probes for."""
        columns = tuple(Column(column.name, column.type) for column in table.columns)
        return self.create_table(name, Table(columns=columns, engine="Null", order_by=()))

    def drop(self, name: str) -> list[str]:
        """The table (and on a sharded cluster its local table, ``IF EXISTS`` both)."""
        names = [name, self.data_table(name)] if self.sharded else [name]
        return [f"DROP TABLE IF EXISTS {self.name(n)}{self.on_cluster} SYNC" for n in names]

    def drop_probe(self, name: str) -> str:
        """A probe table (``Null``, never behind a ``Distributed`` table)."""
        return f"DROP TABLE IF EXISTS {self.name(name)}{self.on_cluster} SYNC"

    def exchange(self, first: str, second: str) -> str:
        """Swap two tables' rows: on a sharded cluster their local tables (each
        ``Distributed`` table then reads the other's rows, under its own name)."""
        first, second = self.data_table(first), self.data_table(second)
        return f"EXCHANGE TABLES {self.name(first)} AND {self.name(second)}{self.on_cluster}"

    def rename(self, old: str, new: str) -> list[str]:
        """On a sharded cluster the local table is renamed and the ``Distributed`` table
        over the old name dropped: the kept rows are ``new`` + ``LOCAL_SUFFIX`` on each
        shard (read them with ``cluster()``)."""
        if not self.sharded:
            return [f"RENAME TABLE {self.name(old)} TO {self.name(new)}{self.on_cluster}"]
        local_old, local_new = self.data_table(old), self.data_table(new)
        return [
            f"RENAME TABLE {self.name(local_old)} TO {self.name(local_new)}{self.on_cluster}",
            f"DROP TABLE IF EXISTS {self.name(old)}{self.on_cluster} SYNC",
        ]

    def delete(self, table: str, condition: str) -> str:
        """A lightweight delete (a mutation) of the rows matching ``condition``, on the
        table holding them (a ``Distributed`` table takes no mutation)."""
        return f"DELETE FROM {self.name(self.data_table(table))}{self.on_cluster} WHERE {condition}"

    def sync_replica(self, table: str) -> str:
        """Wait until this node holds every part the table's other replicas committed (a
        statement about this node); on a sharded cluster, every node of every shard (a read
        through a ``Distributed`` table may be answered by any replica of a shard)."""
        if self.sharded:
            return f"SYSTEM SYNC REPLICA{self.on_cluster} {self.name(self.data_table(table))}"
        return f"SYSTEM SYNC REPLICA {self.name(table)}"


def replicated(engine: str) -> str:
    """``ReplacingMergeTree(version)`` → ``ReplicatedReplacingMergeTree('/clickhouse/tables/
    {uuid}/{shard}', '{replica}', version)``, with the server's {shard}/{replica} macros and
    the table's own UUID; an engine that is not a ``*MergeTree`` (``Null``) is left alone."""
    match = _MERGE_TREE.match(engine)
    if match is None or match.group(1).startswith("Replicated"):
        return engine
    family, arguments = match.group(1), (match.group(2) or "").strip()
    return f"Replicated{family}({ZOOKEEPER_PATH}{', ' + arguments if arguments else ''})"


def create_missing(client: Client, ddl: Ddl, tables: Mapping[str, Table]) -> list[str]:
    """Create each of ``tables`` (by name) that the database does not hold yet (on a sharded
    cluster, its local table and its ``Distributed`` table); return the names created.
    Tables that exist are left alone: no DDL is sent for them."""
    if not tables:
        return []
    names = list(tables) + [ddl.data_table(name) for name in tables if ddl.sharded]
    existing = {
        row[0]
        for row in client.query(
            "SELECT name FROM system.tables WHERE database = {database:String} "
            "AND name IN {names:Array(String)}",
            parameters={"database": ddl.database, "names": names},
        ).result_rows
    }
    created = []
    for name, table in tables.items():
        if name in existing and ddl.data_table(name) in existing:
            continue
        key = FIRST_SHARD_KEY if name in BOOKKEEPING else WORKSPACE_SHARDING_KEY
        by_workspace = ddl.sharded and key == WORKSPACE_SHARDING_KEY
        if by_workspace and "workspace_id" not in table.column_names:
            raise ConfigurationError(
                f"the table {name} has no workspace_id column: on a sharded cluster every read "
                "model is sharded by workspace"
            )
        for statement in ddl.create(name, table, key):
            client.command(statement)
        created.append(name)
    return created


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ensure_database(client: Client, ddl: Ddl) -> None:
    """Create the database unless it exists (``ON CLUSTER`` only when it is missing here)."""
    rows = client.query(
        "SELECT count() FROM system.databases WHERE name = {database:String}",
        parameters={"database": ddl.database},
    ).result_rows
    if not rows[0][0]:
        client.command(ddl.create_database())


TRACKING = Table(
    columns=(
        Column("table_key", "String"),
        Column("processor", "String"),
        Column("seq", "UInt64"),
        Column("position", "UInt64"),
        Column("intent", "UInt64"),
        Column("fingerprint", "String"),
        Column("store_id", "String"),
        Column("updated_at", "DateTime64(6, 'UTC')"),
    ),
    engine="ReplacingMergeTree(seq)",
    order_by=("table_key",),
)
"""Processors' positions and intents, one row per write, the highest ``seq`` winning."""

DEAD_LETTERS = Table(
    columns=(
        Column("table_key", "String"),
        Column("model", "LowCardinality(String)"),
        Column("position", "UInt64"),
        Column("event_id", "String"),
        Column("stream_id", "String"),
        Column("workspace_id", "String"),
        Column("action", "String"),
        Column("error", "String"),
        Column("failed_at", "DateTime64(6, 'UTC')"),
        Column("status", "LowCardinality(String)"),
        Column("updated_at", "DateTime64(6, 'UTC')"),
    ),
    engine="ReplacingMergeTree(updated_at)",
    order_by=("table_key", "position"),
)
"""Events a read model could not hold, one row per change of their state."""

BOOKKEEPING: dict[str, Table] = {TRACKING_TABLE: TRACKING, DEAD_LETTERS_TABLE: DEAD_LETTERS}
