"""How a read model is declared: its ClickHouse table, the events it handles, how an event
becomes rows, what can be filtered, and who may read it. One declaration per file under
``projections/``; everything else (DDL, processors, queries) is derived from it."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from auditcore.projection.records import EventRecord

Row = dict[str, Any]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    codec: str | None = None


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
class ReadModel(ABC):
    """The common declaration of every read model."""

    name: str
    description: str
    table: Table
    handles: tuple[str, ...] = ()
    """Action names or ``prefix.*`` patterns this model projects; empty means every action."""
    filters: tuple[Filter, ...] = ()
    text_column: str | None = None
    time_column: str | None = None
    entitlement: str = ""
    version: int = 1

    @property
    def table_name(self) -> str:
        return f"{self.name}_v{self.version}"

    @property
    def required_entitlement(self) -> str:
        return self.entitlement or f"{self.name}:read"

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
            "columns": [(c.name, c.type, c.codec) for c in self.table.columns],
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

    def previous_keys(self, records: Sequence[EventRecord]) -> set[UUID]:
        """Keys whose current row ``rows_for`` needs to evolve (none for append-only tables)."""
        return set()

    @abstractmethod
    def rows_for(self, records: Sequence[EventRecord], previous: Mapping[UUID, Row]) -> list[Row]:
        """Turn a batch of records (already filtered to ``handles``) into rows to insert."""


@dataclass(frozen=True, kw_only=True)
class EventTable(ReadModel):
    """Each event becomes zero or more rows, appended (an event log, a roll-up)."""

    to_rows: Callable[[EventRecord], Iterable[Row]]
    combine: Callable[[list[Row]], list[Row]] | None = None
    """Optional pre-aggregation of a batch's rows (e.g. summing counts) before insert."""

    def rows_for(self, records: Sequence[EventRecord], previous: Mapping[UUID, Row]) -> list[Row]:
        rows = [row for record in records for row in self.to_rows(record)]
        return self.combine(rows) if self.combine else rows


@dataclass(frozen=True, kw_only=True)
class StateTable(ReadModel):
    """The current state of each stream, one row per stream (kept by ReplacingMergeTree on
    its version column): ``fold`` evolves the previous row by one event."""

    key_column: str
    fold: Callable[[Row | None, EventRecord], Row]

    def previous_keys(self, records: Sequence[EventRecord]) -> set[UUID]:
        return {record.stream_id for record in records if record.version > 1}

    def rows_for(self, records: Sequence[EventRecord], previous: Mapping[UUID, Row]) -> list[Row]:
        latest: dict[UUID, Row] = {}
        for record in records:
            state = latest.get(record.stream_id) or previous.get(record.stream_id)
            latest[record.stream_id] = self.fold(state, record)
        return list(latest.values())
