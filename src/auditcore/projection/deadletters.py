"""Dead letters: events a read model cannot hold, parked so that everything else keeps flowing.

A batch that ClickHouse refuses for its data (a value it cannot parse or convert, a time
outside what the read side holds), or that a state table's fold raises on, is split until
the refused events are isolated; those are parked here, one row per read model and position,
with the event's id, workspace, action and the error, and the processor moves on. A refusal
that is not about the data (ClickHouse unreachable, out of memory, too many parts) parks
nothing: the batch is retried with backoff, as any failed step.

A parked event is retried or skipped on command (``auditcore projections dead-letters``).
Rows keep their history: a resolved letter stays, marked ``retried`` or ``skipped``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson
from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.connection import query_dicts
from auditcore.clickhouse.ddl import DEAD_LETTERS_TABLE, Ddl
from auditcore.projection.log import LoggedEvent

# ClickHouse errors about the data itself (by code): the same event would be refused again.
# Anything else (network, memory, parts, a bug in a read model's SQL) is not parked.
_DATA_ERRORS = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE
        321,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        376,  # CANNOT_PARSE_UUID
        395,  # FUNCTION_THROW_IF_VALUE_IS_NON_ZERO (a read model's own check)
        407,  # DECIMAL_OVERFLOW
        441,  # CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING
        467,  # CANNOT_PARSE_BOOL
    }
)
_CODE = re.compile(r"Code: (\d+)\.")


def refuses_data(error: BaseException) -> bool:
    """Whether ClickHouse refused a statement because of the rows' values."""
    match = _CODE.search(str(error))
    return match is not None and int(match.group(1)) in _DATA_ERRORS


def short_error(error: BaseException) -> str:
    """The first line of an error, without ClickHouse's stack of ``while executing``."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = text.split(": while executing", 1)[0]
    return f"{type(error).__name__}: {text}"[:1000]


class LetterStatus(StrEnum):
    PARKED = "parked"
    RETRIED = "retried"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class DeadLetter:
    table_key: str
    model: str
    position: int
    event_id: str
    stream_id: str
    workspace_id: str
    action: str
    error: str
    failed_at: datetime
    status: LetterStatus = LetterStatus.PARKED
    updated_at: datetime | None = None

    @classmethod
    def of(
        cls, table_key: str, model: str, event: LoggedEvent, error: BaseException | str
    ) -> DeadLetter:
        """A letter for a stored event, with what can be read of its envelope."""
        try:
            state: Any = orjson.loads(event.state)
        except orjson.JSONDecodeError:
            state = None
        if not isinstance(state, dict):
            state = {}
        return cls(
            table_key=table_key,
            model=model,
            position=event.position,
            event_id=str(state.get("event_id", "")),
            stream_id=event.stream_id,
            workspace_id=str(state.get("workspace_id", "")),
            action=event.action,
            error=error if isinstance(error, str) else short_error(error),
            failed_at=datetime.now(UTC),
        )


_POSITIONS_PER_QUERY = 5_000
"""Positions per lookup: up to 20 digits and a separator each, ~100 KB, under a server's
128 KiB limit on one query parameter."""
_COLUMNS = [
    "table_key",
    "model",
    "position",
    "event_id",
    "stream_id",
    "workspace_id",
    "action",
    "error",
    "failed_at",
    "status",
    "updated_at",
]


def park(client: Client, letters: Iterable[DeadLetter]) -> None:
    """Record letters (a letter recorded twice for one position is one letter)."""
    now = datetime.now(UTC)
    rows = [
        [
            letter.table_key,
            letter.model,
            letter.position,
            letter.event_id,
            letter.stream_id,
            letter.workspace_id,
            letter.action,
            letter.error,
            letter.failed_at,
            letter.status.value,
            now,
        ]
        for letter in letters
    ]
    if rows:
        client.insert(DEAD_LETTERS_TABLE, rows, column_names=_COLUMNS)


def resolve(
    client: Client, letters: Sequence[DeadLetter], status: LetterStatus, error: str | None = None
) -> None:
    """Mark letters retried or skipped (or, with ``PARKED`` and an error, failed again)."""
    park(
        client, [replace(letter, status=status, error=error or letter.error) for letter in letters]
    )


def positions_between(client: Client, table_key: str, after: int, last: int) -> set[int]:
    """Positions in (after, last] parked for a table, whatever their status."""
    rows = client.query(
        f"SELECT DISTINCT position FROM `{DEAD_LETTERS_TABLE}` WHERE table_key = {{key:String}} "
        "AND position > {after:UInt64} AND position <= {last:UInt64}",
        parameters={"key": table_key, "after": after, "last": last},
    ).result_rows
    return {int(row[0]) for row in rows}


def letters(
    client: Client,
    table_keys: Sequence[str],
    *,
    status: LetterStatus | None = LetterStatus.PARKED,
    workspace_id: str | None = None,
    positions: Sequence[int] | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """Letters of the given tables, oldest position first."""
    if not table_keys:
        return []
    if positions is not None and len(positions) > _POSITIONS_PER_QUERY:
        found = [
            letter
            for start in range(0, len(positions), _POSITIONS_PER_QUERY)
            for letter in letters(
                client,
                table_keys,
                status=status,
                workspace_id=workspace_id,
                positions=positions[start : start + _POSITIONS_PER_QUERY],
            )
        ]
        found.sort(key=lambda letter: (letter.model, letter.position))
        return found[:limit] if limit is not None else found
    conditions = ["table_key IN {keys:Array(String)}"]
    parameters: dict[str, Any] = {"keys": list(table_keys)}
    if status is not None:
        conditions.append("status = {status:String}")
        parameters["status"] = status.value
    if workspace_id is not None:
        conditions.append("workspace_id = {workspace:String}")
        parameters["workspace"] = workspace_id
    if positions is not None:
        conditions.append("position IN {positions:Array(UInt64)}")
        parameters["positions"] = list(positions)
    sql = (
        f"SELECT {', '.join(_COLUMNS)} FROM `{DEAD_LETTERS_TABLE}` FINAL "
        f"WHERE {' AND '.join(conditions)} ORDER BY model, position"
        + (f" LIMIT {int(limit)}" if limit is not None else "")
    )
    return [
        DeadLetter(**{**row, "status": LetterStatus(row["status"])})
        for row in query_dicts(client, sql, parameters)
    ]


def parked_counts(client: Client, table_keys: Sequence[str]) -> dict[str, int]:
    """How many letters are parked per table key."""
    if not table_keys:
        return {}
    rows = client.query(
        f"SELECT table_key, count() FROM `{DEAD_LETTERS_TABLE}` FINAL "
        "WHERE table_key IN {keys:Array(String)} AND status = 'parked' GROUP BY table_key",
        parameters={"keys": list(table_keys)},
    ).result_rows
    return {row[0]: int(row[1]) for row in rows}


def forget(client: Client, ddl: Ddl, table_key: str) -> None:
    """Drop a table's letters (the table is gone)."""
    client.command(
        ddl.delete(DEAD_LETTERS_TABLE, "table_key = {key:String}"),
        parameters={"key": table_key},
    )
