"""Live latency (record() returns → the event is answered by the read API) and the peak memory
of a processor catching up, each measured in the same run as its baseline."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from rich.table import Table

from auditcore import AuditCore, Settings
from auditcore.errors import NotFoundError
from benchmarks.common import bench_registry, console, fresh_database, populate, save_results

CATCH_UP = """
import sys
from auditcore import AuditCore, Settings
with AuditCore(Settings(sys.argv[1], sys.argv[2])) as audit:
    audit.project()
"""
IDLE = """
import sys
from auditcore import AuditCore, Settings
with AuditCore(Settings(sys.argv[1], sys.argv[2])) as audit:
    audit.migrate()
"""


def live_latency(audit: AuditCore, samples: int) -> list[float]:
    """Seconds from record() returning to the event being readable, with followers running."""
    stop = threading.Event()
    followers = audit.projections.follow(stop)
    reader = audit.reader("ws0")
    latencies = []
    try:
        for n in range(samples):
            event = audit.record("user.logged_in", workspace_id="ws0", metadata={"n": n})
            committed = time.perf_counter()
            while True:
                try:
                    reader.get(event.event_id)
                    break
                except NotFoundError:
                    time.sleep(0.005)
            latencies.append(time.perf_counter() - committed)
    finally:
        stop.set()
        for follower in followers:
            follower.join(timeout=10)
    return latencies


def peak_rss_mb(script: str, settings: Settings) -> float:
    """Peak resident memory of a fresh process running ``script`` (its own, via wait4)."""
    child = subprocess.Popen(
        [sys.executable, "-c", script, settings.event_store, settings.clickhouse]
    )
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"the measured process failed with exit code {child.returncode}")
    return usage.ru_maxrss / 1024


def run(events: int, samples: int) -> None:
    with fresh_database("ac_bench_live") as url, tempfile.TemporaryDirectory() as chdb:
        settings = Settings(url, f"chdb://{chdb}/catchup")
        with AuditCore(settings, registry=bench_registry()) as audit:
            populate(audit, events)
        idle = peak_rss_mb(IDLE, settings)
        catching_up = peak_rss_mb(CATCH_UP, settings)
        with AuditCore(Settings(url, f"chdb://{chdb}/live"), registry=bench_registry()) as audit:
            audit.project()
            latencies = live_latency(audit, samples)
    ms = sorted(latency * 1000 for latency in latencies)
    p50, p99 = statistics.median(ms), ms[min(len(ms) - 1, int(0.99 * len(ms)))]
    table = Table(title="live latency and memory", title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row(f"record() → readable, p50 ({samples} events)", f"{p50:,.0f} ms")
    table.add_row("record() → readable, p99", f"{p99:,.0f} ms")
    table.add_row("peak RSS: a process that only opens the stores (baseline)", f"{idle:,.0f} MB")
    table.add_row(
        f"peak RSS: catching 4 read models up over {events:,} events", f"{catching_up:,.0f} MB"
    )
    console.print(table)
    save_results(
        "live",
        {
            "events": events,
            "latency_ms": ms,
            "peak_rss_mb": {"baseline": idle, "catch_up": catching_up},
        },
    )
