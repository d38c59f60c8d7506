"""What a report says, computed from the read model with the same queries as the API, so the
report and the data never disagree."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import orjson

from auditcore.events.envelope import AuditEvent
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
    total: int
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
    def mean_time_to_acknowledge(self) -> timedelta | None:
        return _mean([i.time_to_acknowledge for i in self.incidents])

    @property
    def mean_time_to_resolve(self) -> timedelta | None:
        return _mean([i.time_to_resolve for i in self.incidents])


def build_report(
    reader: WorkspaceReader,
    since: datetime,
    until: datetime,
    *,
    now: datetime,
    detail_limit: int = 500,
) -> ReportData:
    """The period is widened to whole chart buckets (as ``stats`` does), and every figure is
    taken over that same widened period."""
    activity = reader.stats(group_by="action", since=since, until=until)
    since, until = activity.since, activity.until
    period = EventQuery(since=since, until=until)
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
        total=reader.count(period),
        activity=activity,
        top_actions=reader.top("action", period),
        top_actors=reader.top("actor", period),
        top_targets=reader.top("target", period),
        sources=reader.top("source", period),
        incidents=_incidents(reader, since, until),
        monitors=_monitors(reader, since, until),
        events=events,
    )


def _incidents(
    reader: WorkspaceReader, since: datetime, until: datetime
) -> list[IncidentLifecycle]:
    """Incidents opened in the period, as they are now."""
    lifecycles = [
        IncidentLifecycle(
            incident_id=str(row["incident_id"]),
            title=row["title"],
            severity=row["severity"],
            status=row["status"],
            opened_at=row["opened_at"],
            acknowledged_at=row["acknowledged_at"],
            resolved_at=row["resolved_at"],
        )
        for row in reader.current("incidents", limit=1000)
        if since <= row["opened_at"] < until
    ]
    return sorted(lifecycles, key=lambda incident: incident.opened_at)


def _monitors(reader: WorkspaceReader, since: datetime, until: datetime) -> list[MonitorOutages]:
    """Outages that began, and downtime that ended, in the period, per monitor."""
    outages: dict[str, int] = defaultdict(int)
    downtime: dict[str, float] = defaultdict(float)
    query = EventQuery(filters={"action": list(MONITOR_ACTIONS)}, since=since, until=until)
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
