"""What every benchmark needs: a fresh PostgreSQL database, a realistic event log written
fast, timing, and a results table printed and saved as JSON."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import psycopg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from auditcore import ActionRegistry, AuditCore, default_registry

ADMIN_URL = os.environ.get(
    "AUDITCORE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RESULTS = Path(__file__).parent / "results"
T = TypeVar("T")
console = Console(width=150)


@dataclass
class Measurement:
    name: str
    events: int
    seconds: float
    note: str = ""
    samples: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


@contextmanager
def fresh_database(prefix: str) -> Iterator[str]:
    """A new PostgreSQL database for one benchmark, dropped afterwards."""
    name = f"{prefix}_{uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


BENCH_ACTIONS = ("user.logged_in", "user.updated", "api_key.used", "settings.updated")


def bench_registry() -> ActionRegistry:
    registry = default_registry.copy()
    for action in BENCH_ACTIONS:
        registry.register(action)
    return registry


def realistic_drafts(count: int, seed: int = 1, workspaces: int = 20) -> Iterator[dict[str, Any]]:
    """A plausible mix: logins, setting changes, key use and incident comments, across 20
    workspaces (by default) and 500 actors, spread over 30 days."""
    rng = random.Random(seed)
    start = datetime(2026, 10, 1, tzinfo=UTC)
    for n in range(count):
        workspace = f"ws{rng.randrange(workspaces)}"
        actor = rng.randrange(500)
        kind = rng.random()
        draft: dict[str, Any] = {
            "workspace_id": workspace,
            "actor": {"id": f"user_{actor}", "type": "user", "name": f"User {actor}"},
            "occurred_at": start + timedelta(seconds=n * 2_592_000 / count + rng.random()),
            "source": rng.choice(("api", "dashboard", "cli")),
            "context": {
                "ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.1",
                "request_id": f"req_{n}",
            },
        }
        if kind < 0.4:
            draft |= {
                "action": "user.logged_in",
                "targets": [{"type": "user", "id": f"user_{actor}"}],
                "metadata": {"method": rng.choice(("sso", "password")), "mfa": True},
            }
        elif kind < 0.6:
            draft |= {
                "action": "settings.updated",
                "targets": [{"type": "workspace", "id": workspace}],
                "metadata": {"setting": "retention_days", "old": "90", "new": "365"},
            }
        elif kind < 0.8:
            draft |= {
                "action": "api_key.used",
                "targets": [{"type": "api_key", "id": f"key_{rng.randrange(50)}"}],
                "metadata": {"route": "/v1/events", "status": 200},
            }
        else:
            draft |= {
                "action": "incident.comment_added",
                "targets": [{"type": "incident", "id": str(uuid4())}],
                "metadata": {"body": f"checked dashboard {rng.randrange(1000)}"},
            }
        yield draft


def populate(audit: AuditCore, count: int, batch: int = 5_000, workspaces: int = 20) -> float:
    """Write ``count`` realistic events in batches; return the seconds it took."""
    started = time.perf_counter()
    drafts = realistic_drafts(count, workspaces=workspaces)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"writing {count:,} events", total=count)
        while chunk := [draft for _, draft in zip(range(batch), drafts, strict=False)]:
            audit.record_many(chunk)
            progress.advance(task, len(chunk))
    return time.perf_counter() - started


def timed(run: Callable[[], int]) -> tuple[int, float]:
    return timed_result(run)


def timed_result(run: Callable[[], T]) -> tuple[T, float]:
    started = time.perf_counter()
    result = run()
    return result, time.perf_counter() - started


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "postgres": _postgres_version(),
    }


def _postgres_version() -> str:
    with psycopg.connect(ADMIN_URL) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


def report(workload: str, rows: list[Measurement], baseline: str, extra: dict[str, Any]) -> None:
    """Print the table (each row beside the baseline) and save the JSON results."""
    base = next(row for row in rows if row.name == baseline)
    table = Table(title=f"{workload} ({extra.get('events', '')} events)", title_justify="left")
    for column in ("what", "events", "seconds", "events/s", f"vs {baseline}", "note"):
        table.add_column(column, justify="left" if column in ("what", "note") else "right")
    for row in rows:
        ratio = row.rate / base.rate if base.rate else 0.0
        table.add_row(
            row.name,
            f"{row.events:,}",
            f"{row.seconds:.2f}",
            f"{row.rate:,.0f}",
            f"{ratio:.2f}x",
            row.note,
        )
    console.print(table)
    save_results(
        workload.split(maxsplit=1)[0].lower(),
        {**extra, "rows": [asdict(row) | {"rate": row.rate} for row in rows]},
    )


def save_results(name: str, results: dict[str, Any]) -> None:
    """Write ``results`` to ``results/NAME.json``, stamped with the machine and the time."""
    RESULTS.mkdir(exist_ok=True)
    payload = {
        "workload": name.split("_", 1)[0],
        "measured_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        **results,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    console.print(f"[dim]saved {path}[/dim]")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
