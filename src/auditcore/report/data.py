"""What a report says, computed from the read model with the same queries as the API, so the
report and the data never disagree.

Every figure is taken from one snapshot: the events the ``audit_events`` read model held, by
its tracked store position, when the report began (``ReportData.position``). Events projected
while the report's queries run have later positions and are left out of every query alike, so
the summary, the breakdowns, the chart and the tables always count the same events. An
incident's or a monitor's state is its read model's own ``fold`` over its events in the
snapshot, so it too is as of that position.

Building a report only reads; ClickHouse's errors propagate. Not covered: on a cluster, a
replica that has not yet received rows up to the tracked position while a report runs (each
query counts what its replica holds).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import orjson

from auditcore.events.envelope import AuditEvent
from auditcore.projection.records import EventRecord
from auditcore.projection.tracking import tracked_tables
from auditcore.readmodel.model import Row, StateTable
from auditcore.readmodel.queries import (
    EventQuery,
    Ranked,
    Stats,
    WorkspaceReader,
    event_from_row,
    summary_from_row,
)

MONITOR_ACTIONS = ("monitor.went_down", "monitor.recovered")


@dataclass(frozen=True)
class IncidentLifecycle:
    """An incident opened in the period, as its events up to the snapshot leave it (by the
    ``incidents`` read model's rules).

    ``acknowledged_at`` is its first acknowledgement, which a reopening keeps (acknowledge,
    resolve, reopen, acknowledge: time to acknowledge is measured to the first one, the time
    it took someone to respond at all); ``resolved_at`` its latest resolution, none while it is
    open again."""

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
    """Incidents opened in the period, as their events in the snapshot leave them."""
    opened = replace(period, filters={"action": ["incident.opened"]})
    ids = [str(row["stream_id"]) for rows in reader.rows(opened) for row in rows]
    lifecycles = [
        IncidentLifecycle(
            incident_id=incident_id,
            title=row["title"],
            severity=row["severity"],
            status=row["status"],
            opened_at=row["opened_at"],
            acknowledged_at=row["acknowledged_at"],
            resolved_at=row["resolved_at"],
        )
        for incident_id, row in _states(reader, "incidents", ids, period).items()
    ]
    return sorted(lifecycles, key=lambda incident: (incident.opened_at, incident.incident_id))


def _states(
    reader: WorkspaceReader, name: str, ids: list[str], period: EventQuery
) -> dict[str, Row]:
    """The rows the current-state read model ``name`` would hold for these streams at the
    snapshot: its own ``fold`` over each stream's events up to the snapshot position, all of
    them, whenever they say they occurred (a client may date events as it likes)."""
    model = reader.model(name)
    if not isinstance(model, StateTable):
        raise TypeError(f"{name} is not a current-state read model")
    records: list[EventRecord] = []
    for start in range(0, len(ids), _STREAMS_PER_QUERY):
        history = EventQuery(
            filters={"stream_id": ids[start : start + _STREAMS_PER_QUERY]},
            up_to_position=period.up_to_position,
        )
        records += [_record(row) for rows in reader.rows(history) for row in rows]
    records.sort(key=lambda record: (str(record.stream_id), record.version))
    # An event the fold refuses is left out, as the read model's processor leaves it out.
    rows = model.rows_for(records, {}, failed={})
    return {str(row[model.key_column]): row for row in rows}


_STREAMS_PER_QUERY = 200


def _record(row: Row) -> EventRecord:
    """An ``audit_events`` row as a fold takes it. Its position is not among the row's
    columns; only the folded state is used, so the stamp is 0."""
    event = summary_from_row(row)
    return EventRecord(
        position=0,
        event_id=row["event_id"],
        workspace_id=row["workspace_id"],
        stream_id=row["stream_id"],
        version=row["version"],
        action=row["action"],
        schema_version=row["schema_version"],
        actor_id=row["actor_id"],
        actor_type=row["actor_type"],
        actor_name=row["actor_name"] or None,
        targets=event["targets"],
        source=row["source"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        context=event["context"],
        metadata=event["metadata"],
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
    current = _states(reader, "monitors", sorted(outages.keys() | downtime.keys()), period)
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
