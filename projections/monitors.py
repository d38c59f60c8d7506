"""Monitors as they are now: one row per monitor, the newest version winning.

``state`` is ``deleted``, else ``paused``, else ``down`` (while ``down_since`` is set), else
``up``: a monitor paused while down is down again when resumed. The row equals the
``Monitor`` aggregate's state (tested property-wise)."""

from __future__ import annotations

from auditcore.projection.records import EventRecord
from auditcore.readmodel.model import Column, Filter, Row, StateTable, Table
from auditcore.readmodel.registry import register


def fold(previous: Row | None, record: EventRecord) -> Row:
    """Evolve a monitor's row by one event."""
    row: Row = (
        dict(previous)
        if previous
        else {
            "workspace_id": record.workspace_id,
            "monitor_id": record.stream_id,
            "name": "",
            "kind": "",
            "url": "",
            "interval_seconds": 0,
            "regions": [],
            "state": "up",
            "down_since": None,
            "downtime_seconds": 0.0,
            "outages": 0,
            "created_at": record.occurred_at,
        }
    )
    data = record.metadata
    match record.action:
        case "monitor.created" | "monitor.configured":
            row.update(
                {
                    key: data[key]
                    for key in ("name", "kind", "url", "interval_seconds", "regions")
                    if key in data
                }
            )
        case "monitor.paused":
            row["state"] = "paused"
        case "monitor.resumed":
            row["state"] = "up" if row["down_since"] is None else "down"
        case "monitor.went_down":
            row.update(state="down", down_since=record.occurred_at)
            row["outages"] += 1
        case "monitor.recovered":
            row.update(state="up", down_since=None)
            row["downtime_seconds"] += float(data.get("downtime_seconds", 0.0))
        case "monitor.deleted":
            row["state"] = "deleted"
    return row


MONITORS = register(
    StateTable(
        name="monitors",
        description="Current state of every monitor, with outage totals.",
        handles=("monitor.*",),
        starts_with="monitor.created",
        key_column="monitor_id",
        fold=fold,
        version=2,  # resuming a monitor that is down keeps it down
        table=Table(
            columns=(
                Column("workspace_id", "LowCardinality(String)"),
                Column("monitor_id", "UUID"),
                Column("version", "UInt32"),
                Column("name", "String"),
                Column("kind", "LowCardinality(String)"),
                Column("url", "String"),
                Column("interval_seconds", "UInt32"),
                Column("regions", "Array(LowCardinality(String))"),
                Column("state", "LowCardinality(String)"),
                Column("down_since", "Nullable(DateTime64(6, 'UTC'))"),
                Column("downtime_seconds", "Float64"),
                Column("outages", "UInt32"),
                Column("created_at", "DateTime64(6, 'UTC')"),
                Column("updated_at", "DateTime64(6, 'UTC')"),
                Column("position", "UInt64"),
            ),
            engine="ReplacingMergeTree(version)",
            order_by=("workspace_id", "monitor_id"),
        ),
        filters=(
            Filter("state", "state = {value:String}", "up, down, paused or deleted"),
            Filter("kind", "kind = {value:String}", "http, tcp, ping or dns"),
        ),
        text_column="name",
        time_column="created_at",
    )
)
