"""Run by tests in a subprocess (chDB allows one engine path per process): builds a report of
a workspace over every time the read models hold, and prints its figures beside independent
counts (its own event table, and the event store's log up to the report's snapshot)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson

from auditcore import AuditCore, Settings
from auditcore.projection.log import LogReader
from auditcore.report import build_report

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)


def main(event_store: str, clickhouse: str, workspace: str) -> None:
    with AuditCore(Settings(event_store, clickhouse)) as audit:
        now = datetime.now(UTC)
        report = build_report(
            audit.reader(workspace), EARLIEST, now + timedelta(days=1), now=now,
            detail_limit=1_000_000,
        )  # fmt: skip
        logged = LogReader(audit.app).between(0, report.position)
        in_store = [orjson.loads(event.state) for event in logged]
    events = report.events
    print(
        json.dumps(
            {
                "position": report.position,
                "total": report.total,
                "listed_sources": {r.key: r.events for r in report.sources},
                "chart": sum(bucket.events for bucket in report.activity.buckets),
                "actions": sum(r.events for r in report.top_actions),
                "actors": report.actors,
                "table": len(events),
                "table_sources": Counter(event.source for event in events),
                "table_actors": len({event.actor.id for event in events}),
                "store": sum(1 for state in in_store if state["workspace_id"] == workspace),
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:])
