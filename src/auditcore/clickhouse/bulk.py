"""Bulk loads: a batch of source rows goes to ClickHouse as one JSONEachRow stream, which
ClickHouse parses once and turns into a table's rows itself with ``INSERT … SELECT``.

chDB reads the batch from a temporary file with ``file()``; a server receives it as the
request body through ``input()``. Either way it is one statement. It is one part (committed
whole) only if its rows fall in one partition: callers that need that split their writes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.connection import ClickHouseTarget, settings_clause


def insert_select(
    client: Client,
    target: ClickHouseTarget,
    table: str,
    columns: Sequence[str],
    select: str,
    payload: bytes,
    structure: str,
    settings: Mapping[str, str | int],
    parameters: Mapping[str, Any] | None = None,
    query_id: str | None = None,
) -> None:
    """Run ``INSERT INTO table (columns) <select>`` where ``select`` reads ``{source}``: the
    JSON Lines ``payload`` with the columns ``structure``; ``select`` may use ``parameters``.
    On a server the statement runs as ``query_id`` if given (chDB runs in this process)."""
    column_list = ", ".join(f"`{name}`" for name in columns)
    clause = settings_clause(settings)
    structure = structure.replace("\\", "\\\\").replace("'", "\\'")
    if target.embedded:
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as file:
            file.write(payload)
            file.flush()
            source = f"file('{file.name}', 'JSONEachRow', '{structure}')"
            client.command(
                f"INSERT INTO `{table}` ({column_list}) {_with(select, source)}{clause}",
                parameters=dict(parameters or {}),
            )
        return
    source = f"input('{structure}')"
    client.command(
        f"INSERT INTO `{table}` ({column_list}) {_with(select, source)}{clause} FORMAT JSONEachRow",
        data=payload,
        parameters=dict(parameters or {}),
        settings={"query_id": query_id} if query_id else None,
    )


def _with(select: str, source: str) -> str:
    """``select`` reading ``source`` where it says ``{source}`` (its other braces are query
    parameters such as ``{name:Type}``, left alone)."""
    return select.replace("{source}", source)
