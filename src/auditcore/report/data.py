"""What a report says, computed from the read model with the same queries as the API, so the
report and the data never disagree.

Every figure is taken from one snapshot: the events the ``audit_events`` read model held, by
its tracked store position, when the report began (``ReportData.position``). Events projected
while the report's queries run have later positions and are left out of every query alike, so
the summary, the breakdowns, the chart and the tables always count the same events. What is
not in the snapshot: the name and state of a monitor ("state now") come from the ``monitors``
read model as it is when asked.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import orjson

from auditcore.events.envelope import AuditEvent
from auditcore.projection.tracking import tracked_tables
from auditcore.readmodel.model import Row
from auditcore.readmodel.queries import (
    EventQuery,
    Ranked,
    Stats,
    WorkspaceReader,
    event_from_row,
)

MONITOR_ACTIONS = ("monitor.went_down", "monitor.recovered")


@dataclass(frozen=True)
class IncidentLifecycle:
    """An incident opened in the period, as its events up to the snapshot leave it.

    ``acknowledged_at`` is its first acknowledgement, which a reopening keeps (acknowledge,
    resolve, reopen, acknowledge: time to acknowledge is measured to the first one, the time
    it took someone to respond at all); ``resolved_at`` its latest resolution, none while it is
    open again. The same rules as the ``incidents`` read model."""

    incident_id: str
    title: str
    severity: str
    status: str
    opened_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None

    @property
    def time_to_acknowledge(self) -> timedelta | None:
        return self.acknowledged_at - self.opened_at if self.acknowledged_at else None

    @property
    def time_to_resolve(self) -> timedelta | None:
        return self.resolved_at - self.opened_at if self.resolved_at else None


@dataclass(frozen=True)
class MonitorOutages:
    monitor_id: str
    name: str
    outages: int
    downtime: timedelta
    state: str


@dataclass(frozen=True)
class ReportData:
    workspace_id: str
    since: datetime
    until: datetime
    generated_at: datetime
    position: int
    """The snapshot: every figure counts exactly the events up to this store position."""
    total: int
    actors: int
    """Different actors among the period's events (exact, not only the top ten)."""
    activity: Stats
    top_actions: list[Ranked]
    top_actors: list[Ranked]
    top_targets: list[Ranked]
    sources: list[Ranked]
    incidents: list[IncidentLifecycle]
    monitors: list[MonitorOutages]
    events: list[AuditEvent]
    """The newest events of the period, at most the detail limit."""

    @property
    def events_truncated(self) -> bool:
        return len(self.events) < self.total

    @property
    def other_sources(self) -> int:
        """Events from sources beyond the ten listed."""
        return self.total - sum(source.events for source in self.sources)

    @property
    def mean_time_to_acknowledge(self) -> timedelta | None:
        return _mean([i.time_to_acknowledge for i in self.incidents])

    @property
    def mean_time_to_resolve(self) -> timedelta | None:
        return _mean([i.time_to_resolve for i in self.incidents])


def snapshot_position(reader: WorkspaceReader) -> int:
    """The store position ``audit_events`` holds every event up to (0 before any projection):
    rows of a batch still being written lie beyond it."""
    table = reader.model("audit_events").table_name
    tracked = tracked_tables(reader.client, [table]).get(table)
    return tracked.position if tracked else 0


def build_report(
    reader: WorkspaceReader,
    since: datetime,
    until: datetime,
    *,
    now: datetime,
    detail_limit: int = 500,
    position: int | None = None,
) -> ReportData:
    """The period is widened to whole chart buckets (as ``stats`` does), and every figure is
    taken over that same widened period and the same snapshot (``position``, by default the
    one ``audit_events`` holds now)."""
    if position is None:
        position = snapshot_position(reader)
    activity = reader.stats(group_by="action", since=since, until=until, up_to_position=position)
    since, until = activity.since, activity.until
    period = EventQuery(since=since, until=until, up_to_position=position)
    events: list[AuditEvent] = []
    for rows in reader.rows(period, page_size=min(detail_limit, 1000)):
        events += [event_from_row(row) for row in rows[: detail_limit - len(events)]]
        if len(events) >= detail_limit:
            break
    return ReportData(
        workspace_id=reader.workspace_id,
        since=since,
        until=until,
        generated_at=now,
        position=position,
        total=reader.count(period),
        actors=reader.distinct("actor", period),
        activity=activity,
        top_actions=reader.top("action", period),
        top_actors=reader.top("actor", period),
        top_targets=reader.top("target", period),
        sources=reader.top("source", period),
        incidents=_incidents(reader, period),
        monitors=_monitors(reader, period),
        events=events,
    )


def _incidents(reader: WorkspaceReader, period: EventQuery) -> list[IncidentLifecycle]:
    """Incidents opened in the period, each folded from all its events in the snapshot
    (whenever they say they occurred: a client may date them as it likes)."""
    opened = replace(period, filters={"action": ["incident.opened"]})
    ids = [str(row["stream_id"]) for rows in reader.rows(opened) for row in rows]
    streams: dict[str, list[Row]] = defaultdict(list)
    for start in range(0, len(ids), _STREAMS_PER_QUERY):
        chunk = ids[start : start + _STREAMS_PER_QUERY]
        history = EventQuery(
            filters={"action_prefix": ["incident."], "stream_id": chunk},
            up_to_position=period.up_to_position,
        )
        for rows in reader.rows(history):
            for row in rows:
                streams[str(row["stream_id"])].append(row)
    lifecycles = [
        _lifecycle(incident_id, sorted(rows, key=lambda row: row["version"]))
        for incident_id, rows in streams.items()
    ]
    return sorted(lifecycles, key=lambda incident: (incident.opened_at, incident.incident_id))


_STREAMS_PER_QUERY = 200


def _lifecycle(incident_id: str, rows: list[Row]) -> IncidentLifecycle:
    """``rows``: the incident's events in version order, its opening first."""
    opened = orjson.loads(rows[0]["metadata"])
    severity = str(opened.get("severity", ""))
    status = "open"
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    for row in rows[1:]:
        match row["action"]:
            case "incident.acknowledged":
                status = "acknowledged"
                acknowledged_at = acknowledged_at or row["occurred_at"]
            case "incident.severity_changed":
                severity = str(orjson.loads(row["metadata"]).get("to_severity", severity))
            case "incident.resolved":
                status, resolved_at = "resolved", row["occurred_at"]
            case "incident.reopened":
                status, resolved_at = "open", None
    return IncidentLifecycle(
        incident_id=incident_id,
        title=str(opened.get("title", "")),
        severity=severity,
        status=status,
        opened_at=rows[0]["occurred_at"],
        acknowledged_at=acknowledged_at,
        resolved_at=resolved_at,
    )


def _monitors(reader: WorkspaceReader, period: EventQuery) -> list[MonitorOutages]:
    """Outages that began, and downtime that ended, in the period, per monitor."""
    outages: dict[str, int] = defaultdict(int)
    downtime: dict[str, float] = defaultdict(float)
    query = replace(period, filters={"action": list(MONITOR_ACTIONS)})
    for rows in reader.rows(query):
        for row in rows:
            monitor_id = str(row["stream_id"])
            if row["action"] == "monitor.went_down":
                outages[monitor_id] += 1
            else:
                metadata = orjson.loads(row["metadata"])
                downtime[monitor_id] += float(metadata.get("downtime_seconds", 0.0))
    if not outages and not downtime:
        return []
    current = {str(row["monitor_id"]): row for row in reader.current("monitors", limit=1000)}
    return sorted(
        (
            MonitorOutages(
                monitor_id=monitor_id,
                name=current[monitor_id]["name"] if monitor_id in current else monitor_id,
                outages=outages.get(monitor_id, 0),
                downtime=_duration(downtime.get(monitor_id, 0.0)),
                state=current[monitor_id]["state"] if monitor_id in current else "unknown",
            )
            for monitor_id in outages.keys() | downtime.keys()
        ),
        key=lambda monitor: (-monitor.downtime.total_seconds(), monitor.name),
    )


def _duration(seconds: float) -> timedelta:
    """Seconds as a duration; more than a timedelta holds (a monitor's recorded downtime is
    whatever its events said) reads as the longest one."""
    try:
        return timedelta(seconds=seconds)
    except OverflowError:
        return timedelta.max


def _mean(spans: list[timedelta | None]) -> timedelta | None:
    known = [span for span in spans if span is not None]
    return sum(known, timedelta()) / len(known) if known else None
