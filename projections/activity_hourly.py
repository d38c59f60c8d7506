"""Events per hour, per action, actor and source: the roll-up behind stats and charts.

A SummingMergeTree keeps one row per key once merged; each batch is pre-summed before insert.
It is kept even when raw events expire, so older activity stays countable (downsampled).
"""

from __future__ import annotations

from collections.abc import Iterator

from auditcore.projection.records import EventRecord
from auditcore.readmodel.model import Column, EventTable, Filter, Row, Table
from auditcore.readmodel.registry import register

KEY = ("workspace_id", "hour", "action", "actor_id", "actor_type", "source")


def to_rows(record: EventRecord) -> Iterator[Row]:
    yield {
        "workspace_id": record.workspace_id,
        "hour": record.occurred_at.replace(minute=0, second=0, microsecond=0),
        "action": record.action,
        "actor_id": record.actor_id,
        "actor_type": record.actor_type,
        "source": record.source,
        "events": 1,
        "position": record.position,
    }


def combine(rows: list[Row]) -> list[Row]:
    summed: dict[tuple[object, ...], Row] = {}
    for row in rows:
        key = tuple(row[name] for name in KEY)
        if key in summed:
            summed[key]["events"] += row["events"]
            summed[key]["position"] = max(summed[key]["position"], row["position"])
        else:
            summed[key] = dict(row)
    return list(summed.values())


ACTIVITY_HOURLY = register(
    EventTable(
        name="activity_hourly",
        description="Event counts per hour, action, actor and source.",
        to_rows=to_rows,
        combine=combine,
        table=Table(
            columns=(
                Column("workspace_id", "LowCardinality(String)"),
                Column("hour", "DateTime('UTC')"),
                Column("action", "LowCardinality(String)"),
                Column("actor_id", "String"),
                Column("actor_type", "LowCardinality(String)"),
                Column("source", "LowCardinality(String)"),
                Column("events", "UInt64"),
                Column("position", "SimpleAggregateFunction(max, UInt64)"),
            ),
            engine="SummingMergeTree(events)",
            order_by=KEY,
            partition_by="toYYYYMM(hour)",
        ),
        filters=(
            Filter("action", "action = {value:String}"),
            Filter("action_prefix", "startsWith(action, {value:String})"),
            Filter("actor_id", "actor_id = {value:String}"),
            Filter("source", "source = {value:String}"),
        ),
        time_column="hour",
    )
)
