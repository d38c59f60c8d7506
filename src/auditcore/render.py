"""How answers look in a terminal: readable tables, JSON with the envelope's field names, or
CSV that is safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from auditcore.events.envelope import AuditEvent
from auditcore.readmodel.export import CSV_COLUMNS, csv_cells

if TYPE_CHECKING:
    from auditcore.readmodel.queries import Stats
    from auditcore.store.dispatcher import DispatcherStats
    from auditcore.store.heartbeats import DispatcherReport


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    CSV = "csv"


def print_events(
    console: Console, events: Sequence[AuditEvent], output: OutputFormat, title: str = ""
) -> None:
    if output is OutputFormat.JSON:
        console.out(json.dumps([event.summary() for event in events], indent=2), highlight=False)
    elif output is OutputFormat.JSONL:
        for event in events:
            console.out(json.dumps(event.summary(), sort_keys=True), highlight=False)
    elif output is OutputFormat.CSV:
        console.out(events_csv(events), highlight=False, end="")
    else:
        console.print(events_table(events, title))


def events_table(events: Sequence[AuditEvent], title: str = "") -> Table:
    table = Table(title=title or None, title_justify="left", show_lines=False)
    table.add_column("occurred (UTC)", no_wrap=True)
    table.add_column("v", justify="right", style="dim")
    table.add_column("action", style="bold cyan", no_wrap=True)
    table.add_column("actor", no_wrap=True)
    table.add_column("targets", max_width=50)
    table.add_column("source", style="dim", no_wrap=True)
    table.add_column("details", max_width=60, overflow="ellipsis", no_wrap=True)
    for event in events:
        table.add_row(
            event.occurred_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(event.version),
            event.action,
            event.actor.name or event.actor.id,
            ", ".join(f"{t.type}:{t.name or t.id}" for t in event.targets),
            event.source,
            describe_metadata(event),
        )
    return table


def describe_metadata(event: AuditEvent) -> str:
    parts = []
    for key, value in event.metadata.items():
        text = value if isinstance(value, str) else json.dumps(value)
        parts.append(f"{key}={text[:40]}")
    return " ".join(parts)


def csv_row(event: AuditEvent) -> list[str]:
    """One flat row per event; targets and metadata as canonical JSON."""
    return csv_cells(event.summary())


def events_csv(events: Sequence[AuditEvent], header: bool = True) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if header:
        writer.writerow(CSV_COLUMNS)
    writer.writerows(csv_row(event) for event in events)
    return buffer.getvalue()


def stats_table(stats: Stats, title: str) -> Table:
    """Counts in a grid: keys (busiest first) against time buckets, whichever way is narrower."""
    totals: dict[str, int] = {}
    cells: dict[tuple[datetime, str], int] = {}
    for bucket in stats.buckets:
        totals[bucket.key] = totals.get(bucket.key, 0) + bucket.events
        cells[(bucket.bucket, bucket.key)] = bucket.events
    keys = sorted(totals, key=lambda key: (-totals[key], key))
    fmt = "%Y-%m-%d %H:%M" if stats.interval != "day" else "%Y-%m-%d"
    moments = sorted({moment for moment, _ in cells})
    labels = [moment.strftime(fmt) for moment in moments]
    keys_down = len(keys) > len(moments)
    rows, columns = (keys, labels) if keys_down else (labels, keys)
    table = Table(title=title, title_justify="left")
    table.add_column(stats.group_by if keys_down else f"{stats.interval} (UTC)", no_wrap=True)
    for column in columns:
        table.add_column(column, justify="right")
    table.add_column("total", justify="right", style="bold")
    for row_index, row in enumerate(rows):
        if keys_down:
            counts = [cells.get((moment, row), 0) for moment in moments]
        else:
            counts = [cells.get((moments[row_index], key), 0) for key in keys]
        table.add_row(row, *[str(count or "·") for count in counts], str(sum(counts)))
    return table


def dispatcher_table(stats: DispatcherStats | None) -> Table:
    """This process's dispatcher, as ``stats()`` gives it (no row before anything was sent)."""
    table = Table(title="Dispatcher", title_justify="left")
    _dispatcher_columns(table)
    if stats:
        table.add_row(*_dispatcher_cells(stats))
    return table


def dispatchers_table(reports: Sequence[DispatcherReport], head: int, now: datetime) -> Table:
    """Every dispatching process as it last reported, and the event store's head."""
    table = Table(
        title=f"Dispatchers (event store head: position {head:,})",
        title_justify="left",
        caption=None if reports else "no process has dispatched events into this store yet",
    )
    table.add_column("process")
    table.add_column("state")
    _dispatcher_columns(table)
    for report in reports:
        silent = report.silent_for(now)
        ago = _ago(now - report.reported_at)
        if silent is not None:
            state = f"[red]silent for {_ago(silent)}[/red] (process gone?)"
        elif report.running:
            state = f"running, reported {ago} ago"
        else:
            state = f"stopped {ago} ago"
        table.add_row(f"{report.host} pid {report.pid}", state, *_dispatcher_cells(report.stats))
    return table


_DISPATCHER_COUNTS = {
    "queued": "queued",
    "accepted": "accepted",
    "written": "written",
    "failed": "failed",
    "rejected": "rejected",
    "retries": "retries",
    "batches": "batches",
    "largest batch": "largest_batch",
}
"""Column heading: ``DispatcherStats`` field."""


def _dispatcher_columns(table: Table) -> None:
    for column in (*_DISPATCHER_COUNTS, "p50 ms", "p99 ms"):
        table.add_column(column, justify="right")


def _dispatcher_cells(stats: DispatcherStats) -> list[str]:
    return [
        *(f"{getattr(stats, field):,}" for field in _DISPATCHER_COUNTS.values()),
        f"{stats.latency_p50_ms:,.1f}",
        f"{stats.latency_p99_ms:,.1f}",
    ]


def _ago(elapsed: timedelta) -> str:
    seconds = int(elapsed.total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"
