"""Events per hour, per action, actor and source: the roll-up behind stats and charts.

Each batch is summed by ClickHouse before insert, and a SummingMergeTree keeps one row per key
once merged, summing ``events`` and keeping the largest ``position`` (both listed in the
engine: a column not listed keeps an arbitrary row's value). It is kept even when raw events
expire, so older activity stays countable. Hours are ``DateTime64``: 1900-2299, like every
read model's times.
"""

from __future__ import annotations

from auditcore.readmodel import fields as f
from auditcore.readmodel.model import Column, EventTable, Filter, Table
from auditcore.readmodel.registry import register

KEY = ("workspace_id", "hour", "action", "actor_id", "actor_type", "source")

ACTIVITY_HOURLY = register(
    EventTable(
        name="activity_hourly",
        description="Event counts per hour, action, actor and source.",
        group_by=KEY,
        table=Table(
            columns=(
                Column("workspace_id", "LowCardinality(String)"),
                Column(
                    "hour", "DateTime64(0, 'UTC')", expr=f.floor_to(f.moment("occurred_at"), 3600)
                ),
                Column("action", "LowCardinality(String)", expr="_action"),
                Column("actor_id", "String", expr="actor.id"),
                Column("actor_type", "LowCardinality(String)", expr="actor.type"),
                Column("source", "LowCardinality(String)"),
                Column("events", "UInt64", expr="count()"),
                Column("position", "SimpleAggregateFunction(max, UInt64)", expr="max(_position)"),
            ),
            engine="SummingMergeTree((events, position))",
            order_by=KEY,
            partition_by="toYear(hour)",
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
