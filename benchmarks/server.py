"""A ClickHouse server beside embedded chDB: catch-up and the read API's questions, the same log
and the same data, in the same run.

The server is the stand-in at ../shared/tools/chdb_http_server.py: chDB (the same engine)
behind ClickHouse's HTTP interface, on this machine. So what differs is the path a server
user takes (HTTP, Native over the wire, per-request parsing in the stand-in's Python), not
the engine or the hardware: a real server is at least as fast at the engine's part and adds
the network's round trips.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table
from tests.clickhouse_server import MISSING, STAND_IN, ClickHouseStandIn

from auditcore import AuditCore, Settings
from auditcore.clickhouse.connection import ClickHouseTarget, connect
from auditcore.projection.runner import ProjectionRunner
from auditcore.readmodel.queries import EventQuery, WorkspaceReader
from benchmarks.catchup import READ_BATCH
from benchmarks.common import (
    Measurement,
    bench_registry,
    console,
    fresh_database,
    populate,
    report,
    save_results,
    timed,
)
from benchmarks.queries import START, fill_clickhouse, timed_ms


@dataclass(frozen=True)
class Compared:
    question: str
    embedded_ms: list[float]
    server_ms: list[float]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(catch_up_events: int, query_events: int) -> None:
    if not STAND_IN.exists():
        console.print(f"[yellow]server: skipped, {MISSING}[/yellow]")
        return
    with tempfile.TemporaryDirectory() as scratch:
        server = ClickHouseStandIn(Path(scratch))
        server.start()
        try:
            catch_up(catch_up_events, Path(scratch) / "chdb", server)
            queries(query_events, Path(scratch) / "chdb", server)
        finally:
            server.stop()


def catch_up(events: int, chdb: Path, server: ClickHouseStandIn) -> list[Measurement]:
    with fresh_database("ac_bench_server") as url:
        with AuditCore(Settings(url, f"chdb://{chdb}"), registry=bench_registry()) as audit:
            populate(audit, events)
            rows = []
            for name, target in (
                ("embedded chDB", ClickHouseTarget(f"chdb://{chdb}?database=catchup")),
                ("ClickHouse server (stand-in, HTTP)", ClickHouseTarget(server.url("catchup"))),
            ):
                console.print(f"catch-up of every read model into {name} …")
                runner = ProjectionRunner(
                    audit.app, target, audit.read_models, batch_size=READ_BATCH
                )
                with connect(target) as client:
                    runner.migrate(client)
                    count, seconds = timed(lambda: max(runner.catch_up(client).values()))  # noqa: B023
                rows.append(Measurement(name, count, seconds, note="all read models"))
        report(
            "server — catch-up, embedded chDB beside a ClickHouse server",
            rows,
            baseline="embedded chDB",
            extra={"events": events},
        )
        return rows


def queries(events: int, chdb: Path, server: ClickHouseStandIn) -> list[Compared]:
    """The read API's questions on the same generated data, embedded and through the server."""
    with (
        fresh_database("ac_bench_server_q") as url,
        AuditCore(Settings(url, f"chdb://{chdb}?database=queries")) as embedded,
        AuditCore(Settings(url, server.url("queries"))) as remote,
    ):
        timings: list[dict[str, list[float]]] = []
        for audit in (embedded, remote):
            console.print(f"filling {audit.settings.clickhouse_target.describe()} …")
            fill_clickhouse(audit, events)
            questions = _questions(audit)
            timings.append({name: timed_ms(ask) for name, ask in questions.items()})
        results = [Compared(name, ms, timings[1][name]) for name, ms in timings[0].items()]
        _report(events, results)
        return results


def _questions(audit: AuditCore) -> dict[str, Callable[[int], Any]]:
    reader = audit.reader("ws3")
    # The engines are compared here: point questions through ClickHouse too (a reader without
    # the store; the read API sends them to the store, which this benchmark never fills).
    projected = WorkspaceReader(
        audit.clickhouse_clients, audit.read_models, "ws3", cursor_key=lambda: b"unused" * 6
    )
    sample = "WHERE workspace_id = 'ws3' ORDER BY event_id LIMIT 31"
    ch = audit.clickhouse
    ids = [row[0] for row in ch.query(f"SELECT event_id FROM audit_events {sample}").result_rows]
    streams = [
        row[0] for row in ch.query(f"SELECT stream_id FROM audit_events {sample}").result_rows
    ]
    actor = ch.query(
        "SELECT actor_id FROM audit_events WHERE workspace_id = 'ws3' "
        "GROUP BY actor_id ORDER BY count() DESC, actor_id LIMIT 1"
    ).result_rows[0][0]
    by_actor = EventQuery({"actor_id": [actor]}, limit=50)
    second = EventQuery({"actor_id": [actor]}, limit=50, cursor=reader.events(by_actor).next_cursor)
    day = START.replace(day=11)
    return {
        "event by id": lambda i: projected.get(ids[i]),
        "a stream's history": lambda i: projected.history(streams[i]),
        "an actor's newest 50": lambda i: reader.events(by_actor),
        "the second keyset page": lambda i: reader.events(second),
        "per-minute counts by action, 6 hours": lambda i: reader.stats(
            interval="minute", since=day, until=day.replace(hour=6)
        ),
        "free-text search, newest 50": lambda i: reader.events(EventQuery(text="checked 4242")),
        "count, one workspace": lambda i: reader.count(EventQuery()),
    }


def _report(events: int, results: list[Compared]) -> None:
    table = Table(
        title=f"server — the read API's questions, {events:,} events (ms, 30 runs)",
        title_justify="left",
    )
    for column in ("question", "embedded p50", "p90", "server p50", "p90", "server / embedded"):
        table.add_column(column, justify="left" if column == "question" else "right")
    for r in results:
        local, remote = percentile(r.embedded_ms, 0.5), percentile(r.server_ms, 0.5)
        table.add_row(
            r.question,
            f"{local:.1f}",
            f"{percentile(r.embedded_ms, 0.9):.1f}",
            f"{remote:.1f}",
            f"{percentile(r.server_ms, 0.9):.1f}",
            f"{remote / local:.1f}x",
        )
    console.print(table)
    save_results(
        f"server_queries_{events}",
        {"events": events, "rows": [asdict(r) for r in results]},
    )
