"""Run by tests in a subprocess (chDB allows one engine path per process):
``project`` catches up in small batches; ``verify`` prints what the read models hold."""

from __future__ import annotations

import json
import sys

from auditcore import AuditCore, Settings
from auditcore.projection.rebuild import rebuild


def main(command: str, event_store: str, clickhouse: str) -> None:
    with AuditCore(Settings(event_store, clickhouse)) as audit:
        if command == "project":
            audit.projections.batch_size = 31
            audit.migrate()
            print("projecting", flush=True)  # the schema exists: kills now land mid-batch
            audit.project()
            return
        if command == "rebuild":
            model = audit.read_models.get("audit_events")
            started = []

            def announce(_: int) -> None:
                if not started:  # the first batch is in: kills now land mid-rebuild
                    started.append(True)
                    print("rebuilding", flush=True)

            result = rebuild(
                model,
                audit.app,
                audit.settings.clickhouse_target,
                audit.clickhouse,
                batch_size=31,
                progress=announce,
            )
            print(json.dumps({"resumed_from": result.resumed_from}))
            return
        client = audit.clickhouse
        audit.migrate()

        def scalar(sql: str) -> int:
            return int(client.query(sql).result_rows[0][0])

        tables = {row[0] for row in client.query("SHOW TABLES").result_rows}
        print(
            json.dumps(
                {
                    "store": audit.app.recorder.max_notification_id() or 0,
                    "rows": scalar("SELECT count() FROM audit_events"),
                    "distinct": scalar("SELECT uniqExact(event_id) FROM audit_events"),
                    "hourly": scalar("SELECT sum(events) FROM activity_hourly"),
                    "incident_rows": scalar("SELECT count() FROM incidents FINAL"),
                    "incident_comments": scalar("SELECT sum(comments) FROM incidents FINAL"),
                    "incident_versions": scalar("SELECT sum(version) FROM incidents FINAL"),
                    "next_rows": scalar("SELECT count() FROM audit_events__next")
                    if "audit_events__next" in tables
                    else None,
                }
            )
        )


if __name__ == "__main__":
    main(*sys.argv[1:4])
