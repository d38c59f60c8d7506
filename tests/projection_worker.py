"""Run by tests in a subprocess (chDB allows one engine path per process):
``project`` catches up (``project-to-be-killed``: in small batches, saying when the kills may
begin); ``follow`` follows until killed, in batches of a
random size; ``verify`` prints what the read models hold; ``compare`` compares every read
model with a fresh rebuild from the store (rows and read-API answers)."""

from __future__ import annotations

import json
import random
import sys
import threading
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from auditcore import AuditCore, Settings
from auditcore.projection.rebuild import rebuild
from auditcore.readmodel.model import ReadModel
from auditcore.readmodel.queries import EventQuery


def main(command: str, event_store: str, clickhouse: str) -> None:
    if command == "compare":
        print(json.dumps(compare(event_store, clickhouse)))
        return
    with AuditCore(Settings(event_store, clickhouse)) as audit:
        if command == "follow":
            audit.projections.batch_size = random.Random().choice([7, 23, 64, 150, 400])
            audit.migrate()
            stop = threading.Event()
            threads = audit.projections.follow(stop, retry_delay=0.05)
            print("projecting", flush=True)  # killed from now on, at any instant
            for thread in threads:
                thread.join()
            return
        if command == "project":
            audit.migrate()
            audit.project()
            return
        if command == "project-to-be-killed":
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


def compare(event_store: str, clickhouse: str) -> dict[str, Any]:
    """Each read model as built incrementally beside the same read model built afresh (into
    another database of the same engine), both merged with OPTIMIZE FINAL: row checksums per
    model, what the read API answers for each workspace, and the events parked."""
    fresh_url = sibling_database(clickhouse, "fresh")
    with (
        AuditCore(Settings(event_store, clickhouse)) as built,
        AuditCore(Settings(event_store, fresh_url)) as fresh,
    ):
        fresh.project()
        built.project()  # a last batch, if the kills left one
        result: dict[str, Any] = {"head": built.app.recorder.max_notification_id() or 0}
        for audit, name in ((built, "built"), (fresh, "fresh")):
            result[name] = {
                "tables": {m.name: table_checksum(audit, m) for m in audit.read_models},
                "answers": answers(audit),
                "status": {
                    s.name: [s.position, s.dead_letters, s.last_error]
                    for s in audit.projections.status(audit.clickhouse)
                },
                "letters": sorted(
                    [x.model, x.position, x.event_id]
                    for x in audit.projections.dead_letters(audit.clickhouse)
                ),
            }
        return result


def sibling_database(clickhouse: str, suffix: str) -> str:
    """Another database of the same engine: ``?database=`` of the chDB path, or the server
    URL's database with ``_suffix``."""
    if clickhouse.startswith("chdb://"):
        return f"{clickhouse.partition('?')[0]}?database={suffix}"
    parts = urlsplit(clickhouse)
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}_{suffix}"))


def table_checksum(audit: AuditCore, model: ReadModel) -> list[int]:
    audit.clickhouse.command(f"OPTIMIZE TABLE `{model.table_name}` FINAL")
    row = audit.clickhouse.query(
        f"SELECT count(), sum(cityHash64(*)) FROM `{model.table_name}`"
    ).result_rows[0]
    return [int(row[0]), int(row[1] or 0)]


def answers(audit: AuditCore) -> dict[str, Any]:
    """What the read API says about every workspace: counts, every event id in order, daily
    stats over the whole time range, and the current incidents and monitors."""
    workspaces = [
        row[0]
        for row in audit.clickhouse.query(
            "SELECT DISTINCT workspace_id FROM audit_events ORDER BY 1"
        ).result_rows
    ]
    found: dict[str, Any] = {}
    for workspace in workspaces:
        reader = audit.reader(workspace)
        ids = [str(row["event_id"]) for rows in reader.rows(EventQuery()) for row in rows]
        stats = reader.stats(
            group_by="action",
            interval="day",
            since=datetime(1900, 1, 1, tzinfo=UTC),
            until=datetime(2299, 12, 31, tzinfo=UTC),
        )
        found[workspace] = {
            "count": reader.count(EventQuery()),
            "ids": ids,
            "stats": [[b.bucket.isoformat(), b.key, b.events] for b in stats.buckets],
            "incidents": _rows(reader.current("incidents", limit=1000)),
            "monitors": _rows(reader.current("monitors", limit=1000)),
        }
    return found


def _rows(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(row, default=str, sort_keys=True) for row in rows)


if __name__ == "__main__":
    main(*sys.argv[1:4])
