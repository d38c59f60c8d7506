"""DDL derived from read-model declarations, for one server or for a cluster."""

from __future__ import annotations

from auditcore.readmodel.model import Column, Table

TRACKING_TABLE = "auditcore_positions"


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
    settings = {"non_replicated_deduplication_window": 1000, **table.settings}
    sql += "\nSETTINGS " + ", ".join(f"{key} = {value}" for key, value in settings.items())
    return sql


def replicated(engine: str) -> str:
    """``ReplacingMergeTree(version)`` → ``ReplicatedReplacingMergeTree('/path', '{replica}',
    version)``, using the server's {shard}/{replica} macros."""
    family, _, arguments = engine.partition("(")
    arguments = arguments.rstrip(")")
    path = "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'"
    return f"Replicated{family}({path}{', ' + arguments if arguments else ''})"


def tracking_table_sql(cluster: str | None = None) -> str:
    table = Table(
        columns=(
            Column("processor", "String"),
            Column("position", "UInt64"),
            Column("fingerprint", "String"),
            Column("store_id", "String"),
            Column("updated_at", "DateTime64(6, 'UTC')"),
        ),
        engine="ReplacingMergeTree(updated_at)",
        order_by=("processor",),
    )
    return create_table_sql(TRACKING_TABLE, table, cluster)
