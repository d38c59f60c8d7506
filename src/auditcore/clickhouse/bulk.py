"""Bulk loads: a batch of stored events goes to ClickHouse as one JSONEachRow stream (the
stored envelope JSON with the store's columns spliced in, no re-encoding), and ClickHouse
parses it once per event and computes the rows itself with ``INSERT … SELECT``.

chDB reads the batch from a temporary file with ``file()``; a server receives it as the
request body through ``input()``. Either way the insert is one statement, atomic, and
carries a deduplication token.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence

from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.connection import ClickHouseTarget
from auditcore.projection.log import LoggedEvent
from auditcore.readmodel.fields import SOURCE_SETTINGS, SOURCE_STRUCTURE


def events_stream(batch: Sequence[LoggedEvent]) -> bytes:
    """One JSON object per line: the stored state with ``_position`` etc. added in front.

    The state is a JSON object with at least the envelope's required keys, so splicing after
    its opening brace keeps it valid; action names and stream ids need no escaping.
    """
    return b"\n".join(
        b'{"_position":%d,"_stream_id":"%s","_version":%d,"_action":"%s",%s'
        % (e.position, e.stream_id.encode(), e.version, e.action.encode(), e.state[1:])
        for e in batch
    )


def insert_select(
    client: Client,
    target: ClickHouseTarget,
    table: str,
    columns: Sequence[str],
    select: str,
    batch: Sequence[LoggedEvent],
    settings: Mapping[str, str | int],
) -> None:
    """Run ``INSERT INTO table (columns) <select>`` where ``select`` reads ``{source}``."""
    column_list = ", ".join(f"`{name}`" for name in columns)
    payload = events_stream(batch)
    all_settings = {**SOURCE_SETTINGS, **settings}
    if target.embedded:
        with tempfile.NamedTemporaryFile(suffix=".jsonl") as file:
            file.write(payload)
            file.flush()
            source = f"file('{file.name}', 'JSONEachRow', '{SOURCE_STRUCTURE}')"
            client.command(
                f"INSERT INTO `{table}` ({column_list}) {select.format(source=source)}",
                settings=all_settings,
            )
        return
    source = f"input('{SOURCE_STRUCTURE}')"
    client.command(
        f"INSERT INTO `{table}` ({column_list}) {select.format(source=source)} FORMAT JSONEachRow",
        data=payload,
        settings=all_settings,
    )
