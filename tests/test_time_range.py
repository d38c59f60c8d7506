"""Every read model's times hold every moment from 1900-01-01 to 2299-12-31 exactly (one
microsecond outside is parked as a dead letter, never stored as another time).

The events are recorded now and then given their times in the store (as a backfill or an
older version might have stored them), so this tests the read side alone, whatever limits
the envelope puts on new events."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

from auditcore import AuditCore, Incident, Monitor, Settings
from auditcore.readmodel.export import ExportFormat, export_chunks
from auditcore.readmodel.queries import EventQuery
from tests.poison import mend

FIRST = datetime(1900, 1, 1, tzinfo=UTC)
LAST = datetime(2299, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_both_ends_of_the_range_in_every_read_model(pg_settings: Settings) -> None:
    with AuditCore(pg_settings) as audit:
        incident = Incident.open("acme", title="old", severity="sev3", service="api")
        incident.acknowledge()
        monitor = Monitor.create("acme", name="probe", url="https://example.com/")
        monitor.went_down("eu-west", "timeout")
        opened, acknowledged, created, down = audit.save(incident, monitor)
        first, last, before, after = (
            audit.record("incident.comment_added", workspace_id="acme", metadata={"body": b})
            for b in ("first", "last", "before", "after")
        )
        for event, moment in (
            (opened, FIRST), (acknowledged, LAST), (created, FIRST), (down, LAST),
            (first, FIRST), (last, LAST),
            (before, FIRST - timedelta(microseconds=1)), (after, LAST + timedelta(microseconds=1)),
        ):  # fmt: skip
            mend(audit, str(event.event_id), iso(moment))
        audit.project()
        acme = audit.reader("acme")

        assert acme.get(first.event_id).occurred_at == FIRST
        assert acme.get(last.event_id).occurred_at == LAST
        oldest = acme.events(EventQuery(until=FIRST + timedelta(microseconds=1)))
        assert {e.event_id for e in oldest.items} == {
            opened.event_id,
            created.event_id,
            first.event_id,
        }
        newest = acme.events(EventQuery(since=LAST))
        assert {e.event_id for e in newest.items} == {
            acknowledged.event_id,
            down.event_id,
            last.event_id,
        }

        early = acme.stats(interval="day", since=FIRST, until=FIRST + timedelta(days=1)).buckets
        assert {(b.bucket, b.key, b.events) for b in early} == {
            (FIRST, "incident.comment_added", 1),
            (FIRST, "incident.opened", 1),
            (FIRST, "monitor.created", 1),
        }
        late = acme.stats(interval="hour", since=LAST - timedelta(hours=1), until=LAST).buckets
        assert {(b.bucket, b.key, b.events) for b in late} == {
            (datetime(2299, 12, 31, 23, tzinfo=UTC), "incident.acknowledged", 1),
            (datetime(2299, 12, 31, 23, tzinfo=UTC), "incident.comment_added", 1),
            (datetime(2299, 12, 31, 23, tzinfo=UTC), "monitor.went_down", 1),
        }
        hours = audit.clickhouse.query(
            "SELECT min(hour), max(hour), sum(events) FROM activity_hourly"
        ).result_rows[0]
        assert hours == (FIRST.replace(tzinfo=None), datetime(2299, 12, 31, 23), 6)

        (row,) = acme.current("incidents")
        assert (row["opened_at"], row["acknowledged_at"], row["updated_at"]) == (FIRST, LAST, LAST)
        (row,) = acme.current("monitors")
        assert (row["created_at"], row["down_since"], row["state"]) == (FIRST, LAST, "down")

        exported = b"".join(export_chunks(acme, EventQuery(), ExportFormat.CSV)).decode()
        times = {row["occurred_at"] for row in csv.DictReader(io.StringIO(exported))}
        assert times == {iso(FIRST), iso(LAST)}

        letters = audit.projections.dead_letters(audit.clickhouse, ["audit_events"])
        assert {x.event_id for x in letters} == {str(before.event_id), str(after.event_id)}
        assert acme.count(EventQuery()) == 6
