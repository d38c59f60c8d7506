"""Incidents as they are now: one row per incident, the newest version winning.

``acknowledged_at`` is the first acknowledgement (time to acknowledge is measured to it, and
a reopened incident keeps it); ``resolved_at`` the latest resolution (none while reopened).
The row equals the ``Incident`` aggregate's state (tested property-wise)."""

from __future__ import annotations

from auditcore.projection.records import EventRecord
from auditcore.readmodel.model import Column, Filter, Row, StateTable, Table
from auditcore.readmodel.registry import register


def fold(previous: Row | None, record: EventRecord) -> Row:
    """Evolve an incident's row by one event."""
    row: Row = (
        dict(previous)
        if previous
        else {
            "workspace_id": record.workspace_id,
            "incident_id": record.stream_id,
            "title": "",
            "severity": "",
            "service": "",
            "status": "open",
            "assignee_id": "",
            "opened_by": record.actor_id,
            "opened_at": record.occurred_at,
            "acknowledged_at": None,
            "resolved_at": None,
            "comments": 0,
            "times_reopened": 0,
        }
    )
    data = record.metadata
    match record.action:
        case "incident.opened":
            row.update(title=data["title"], severity=data["severity"], service=data["service"])
        case "incident.acknowledged":
            row.update(
                status="acknowledged",
                acknowledged_at=row["acknowledged_at"] or record.occurred_at,
            )
        case "incident.severity_changed":
            row["severity"] = data["to_severity"]
        case "incident.assigned":
            row["assignee_id"] = data["assignee_id"]
        case "incident.comment_added":
            row["comments"] += 1
        case "incident.resolved":
            row.update(status="resolved", resolved_at=record.occurred_at)
        case "incident.reopened":
            row.update(status="open", resolved_at=None)
            row["times_reopened"] += 1
    return row


INCIDENTS = register(
    StateTable(
        name="incidents",
        description="Current state of every incident.",
        handles=("incident.*",),
        starts_with="incident.opened",
        key_column="incident_id",
        fold=fold,
        version=2,  # acknowledged_at survives a reopen
        table=Table(
            columns=(
                Column("workspace_id", "LowCardinality(String)"),
                Column("incident_id", "UUID"),
                Column("version", "UInt32"),
                Column("title", "String"),
                Column("severity", "LowCardinality(String)"),
                Column("service", "LowCardinality(String)"),
                Column("status", "LowCardinality(String)"),
                Column("assignee_id", "String"),
                Column("opened_by", "String"),
                Column("opened_at", "DateTime64(6, 'UTC')"),
                Column("acknowledged_at", "Nullable(DateTime64(6, 'UTC'))"),
                Column("resolved_at", "Nullable(DateTime64(6, 'UTC'))"),
                Column("comments", "UInt32"),
                Column("times_reopened", "UInt16"),
                Column("updated_at", "DateTime64(6, 'UTC')"),
                Column("position", "UInt64"),
            ),
            engine="ReplacingMergeTree(version)",
            order_by=("workspace_id", "incident_id"),
        ),
        filters=(
            Filter("status", "status = {value:String}", "open, acknowledged or resolved"),
            Filter("severity", "severity = {value:String}", "sev1 … sev4"),
            Filter("service", "service = {value:String}"),
            Filter("assignee_id", "assignee_id = {value:String}"),
        ),
        text_column="title",
        time_column="opened_at",
    )
)
