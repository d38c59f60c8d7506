"""How events look in a terminal: readable tables, or JSON with the envelope's field names."""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum

from rich.console import Console
from rich.table import Table

from auditcore.events.envelope import AuditEvent


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"


def print_events(
    console: Console, events: Sequence[AuditEvent], output: OutputFormat, title: str = ""
) -> None:
    if output is OutputFormat.JSON:
        console.print_json(json.dumps([event.summary() for event in events]))
    elif output is OutputFormat.JSONL:
        for event in events:
            console.out(json.dumps(event.summary(), sort_keys=True), highlight=False)
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
