"""How a read model is declared: its ClickHouse table, the events it handles, how an event
becomes rows, what can be filtered, and who may read it. One declaration per file under
``projections/``; everything else (DDL, processors, queries) is derived from it."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from auditcore.events.envelope import AuditEvent
from auditcore.projection.records import EventRecord

Row = dict[str, Any]
HANDLES_PATTERN = r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*(\.\*|\.[a-z][a-z0-9_]*)"


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    codec: str | None = None
    expr: str | None = None
    """For an ``EventTable``: the SQL computing this column from the stored event (see
    ``auditcore.readmodel.fields``); other columns of the same table may be referred to by name."""


@dataclass(frozen=True)
class Filter:
    """A filter the read API accepts: a SQL condition with one typed parameter, ``{value:T}``.

    Values always travel as query parameters, never spliced into the SQL.
    """

    name: str
    condition: str
    help: str = ""
    parse: Callable[[str], Any] | None = None
    """Turns the text a caller gives into the parameter's value (default: the text itself)."""
    settings: Mapping[str, str | int] = field(default_factory=dict)
    """ClickHouse settings for queries using this filter (e.g. to let a projection serve it)."""
    live: Callable[[AuditEvent, Any], bool] | None = None
    """The same condition on an event, for the live tail (which follows the store, not
    ClickHouse); it gets the parsed value. Filters without it are refused by the live tail."""
    value_schema: Mapping[str, Any] = field(default_factory=dict)
    """JSON Schema of one value beyond "1 to 256 characters" (e.g. ``{"format": "uuid"}``),
    for the OpenAPI document: every value it allows must parse."""


@dataclass(frozen=True)
class Table:
    """A ClickHouse table: columns, engine, sort key, partitioning, retention and indexes."""

    columns: tuple[Column, ...]
    engine: str
    order_by: tuple[str, ...]
    partition_by: str | None = None
    ttl: str | None = None
    indexes: tuple[str, ...] = ()
    settings: Mapping[str, str | int] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


@dataclass(frozen=True, kw_only=True)
class ReadModel:
    """The common declaration of every read model.

    Every table has a ``position`` column: the store position of the newest event a row
    reflects (``max`` for roll-ups, whose engine must aggregate it). Processors rely on it to
    tell which parts of an interrupted batch were committed (``auditcore.projection.tracking``).
    """

    name: str
    description: str
    table: Table
    handles: tuple[str, ...] = ()
    """Action names or ``prefix.*`` patterns this model projects; empty means every action."""
    filters: tuple[Filter, ...] = ()
    text_column: str | None = None
    text_folded: bool = False
    """The text column holds its text already folded (``auditcore.readmodel.text.fold_sql``
    in its SQL), so searches need not fold it per row."""
    time_column: str | None = None
    entitlement: str = ""
    version: int = 1
    """Bump to force a rebuild when what ``fingerprint`` covers has not changed (e.g. a fold)."""

    @property
    def table_name(self) -> str:
        """The live table's name: stable, so a rebuild can swap a new version in beneath it."""
        return self.name

    @property
    def required_entitlement(self) -> str:
        return self.entitlement or f"{self.name}:read"

    def handles_sql(self, column: str) -> str:
        """The ``handles`` patterns as a SQL condition on an action column."""
        conditions = [
            f"startsWith({column}, '{pattern[:-1]}')"
            if pattern.endswith(".*")
            else f"{column} = '{pattern}'"
            for pattern in self.handles
        ]
        return " OR ".join(conditions)

    def handles_action(self, action: str) -> bool:
        if not self.handles:
            return True
        return any(
            action == pattern or (pattern.endswith(".*") and action.startswith(pattern[:-1]))
            for pattern in self.handles
        )

    def fingerprint(self) -> str:
        """Changes whenever the table's declaration changes (so a rebuild is needed)."""
        declaration = {
            "version": self.version,
            "columns": [(c.name, c.type, c.codec, c.expr) for c in self.table.columns],
            "engine": self.table.engine,
            "order_by": self.table.order_by,
            "partition_by": self.table.partition_by,
            "ttl": self.table.ttl,
            "indexes": self.table.indexes,
            "handles": self.handles,
        }
        return hashlib.sha256(json.dumps(declaration, sort_keys=True).encode()).hexdigest()[:16]

    def filter(self, name: str) -> Filter | None:
        return next((f for f in self.filters if f.name == name), None)

    def __post_init__(self) -> None:
        if "position" not in self.table.column_names:
            raise ValueError(
                f"read model {self.name!r}: its table needs a `position` column (UInt64; "
                "SimpleAggregateFunction(max, UInt64) in a roll-up, listed in its engine)"
            )
        for pattern in self.handles:
            if not re.fullmatch(HANDLES_PATTERN, pattern):
                raise ValueError(
                    f"read model {self.name!r}: handles pattern {pattern!r} must be an action "
                    "name or a prefix ending in '.*', e.g. 'incident.*'"
                )


@dataclass(frozen=True, kw_only=True)
class EventTable(ReadModel):
    """Each handled event becomes a row that ClickHouse computes from the stored event with the
    columns' SQL (so catch-up and rebuilds run at ClickHouse speed); ``group_by`` turns the
    batch into a roll-up instead (aggregate columns such as ``count()`` then)."""

    group_by: tuple[str, ...] = ()

    def select_sql(self, source: str) -> str:
        """``SELECT`` turning a batch of stored events (``source``) into this table's rows."""
        columns = ", ".join(
            f"{column.expr or column.name} AS `{column.name}`" for column in self.table.columns
        )
        sql = f"SELECT {columns} FROM {source}"
        if self.handles:
            sql += f" WHERE {self.handles_sql('_action')}"
        if self.group_by:
            sql += " GROUP BY " + ", ".join(f"`{name}`" for name in self.group_by)
        return sql


@dataclass(frozen=True, kw_only=True)
class StateTable(ReadModel):
    """The current state of each stream, one row per stream (kept by ReplacingMergeTree on
    its version column): ``fold`` evolves the previous row by one event. A row starts with
    the ``starts_with`` action; events of streams that never started here are ignored (e.g.
    a standalone ``incident.comment_added`` recorded without an incident aggregate).

    Every state table has ``version``, ``updated_at`` and ``position`` columns, kept here:
    the engine keeps the newest version, and processors resume from the newest position."""

    key_column: str
    starts_with: str
    fold: Callable[[Row | None, EventRecord], Row]

    def rows_for(
        self,
        records: Sequence[EventRecord],
        previous: Mapping[UUID, Row],
        failed: dict[int, str] | None = None,
    ) -> list[Row]:
        """The streams' rows after ``records``, evolved from their ``previous`` rows.

        An event whose version a stream's row already holds is skipped, so folding a batch
        again changes nothing. With ``failed``, an event the fold raises on is left out and
        recorded there (by position, with the error), and the stream goes on without it."""
        latest: dict[UUID, Row] = {}
        for record in records:
            state = latest.get(record.stream_id) or previous.get(record.stream_id)
            if state is None and record.action != self.starts_with:
                continue
            if state is not None and record.version <= state["version"]:
                continue
            try:
                row = self.fold(state, record)
            except Exception as error:
                if failed is None:
                    raise
                failed[record.position] = f"{type(error).__name__}: {error}"
                continue
            row.update(
                version=record.version, updated_at=record.occurred_at, position=record.position
            )
            latest[record.stream_id] = row
        return list(latest.values())
