"""DDL derived from read-model declarations, for one server or for a cluster, and the read
side's own bookkeeping tables (positions, dead letters) and probe tables."""

from __future__ import annotations

from auditcore.readmodel.model import Column, Table

TRACKING_TABLE = "auditcore_tracking"
DEAD_LETTERS_TABLE = "auditcore_dead_letters"
PROBE_SUFFIX = "__probe"


def create_table_sql(name: str, table: Table, cluster: str | None = None) -> str:
    """``CREATE TABLE IF NOT EXISTS`` for a table; on a cluster, ``ON CLUSTER`` with the
    Replicated variant of its engine (so every replica holds the same rows)."""
    columns = [
        f"    `{column.name}` {column.type}" + (f" {column.codec}" if column.codec else "")
        for column in table.columns
    ]
    body = ",\n".join([*columns, *(f"    {index}" for index in table.indexes)])
    on_cluster = f" ON CLUSTER `{cluster}`" if cluster else ""
    sql = (
        f"CREATE TABLE IF NOT EXISTS `{name}`{on_cluster} (\n{body}\n)\n"
        f"ENGINE = {replicated(table.engine) if cluster else table.engine}\n"
        f"ORDER BY ({', '.join(table.order_by)})"
    )
    if table.partition_by:
        sql += f"\nPARTITION BY {table.partition_by}"
    if table.ttl:
        sql += f"\nTTL {table.ttl}"
    if table.settings:
        sql += "\nSETTINGS " + ", ".join(
            f"{key} = {value}" for key, value in table.settings.items()
        )
    return sql


def probe_table_sql(name: str, table: Table) -> str:
    """A ``Null`` table with ``table``'s columns: inserting into it computes and checks the
    rows and keeps nothing, so a processor can find which events ClickHouse refuses without
    writing any. Local to the server the processor talks to (never ``ON CLUSTER``)."""
    columns = ",\n".join(f"    `{column.name}` {column.type}" for column in table.columns)
    return f"CREATE TABLE IF NOT EXISTS `{name}` (\n{columns}\n)\nENGINE = Null"


def replicated(engine: str) -> str:
    """``ReplacingMergeTree(version)`` → ``ReplicatedReplacingMergeTree('/path', '{replica}',
    version)``, using the server's {shard}/{replica} macros."""
    family, _, arguments = engine.partition("(")
    arguments = arguments.rstrip(")")
    path = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
    return f"Replicated{family}({path}{', ' + arguments if arguments else ''})"


def tracking_table_sql(cluster: str | None = None) -> str:
    """Processors' positions and intents, one row per write, the highest ``seq`` winning."""
    table = Table(
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
    return create_table_sql(TRACKING_TABLE, table, cluster)


def dead_letters_table_sql(cluster: str | None = None) -> str:
    """Events a read model could not hold, one row per change of their state."""
    table = Table(
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
    return create_table_sql(DEAD_LETTERS_TABLE, table, cluster)
