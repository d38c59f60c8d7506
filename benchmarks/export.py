"""Export: peak memory and speed of streaming a workspace's events to CSV, beside a process
that only opens the stores (the floor) and a naive export that holds every event before
writing, all measured in the same run on the same read model."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

from rich.table import Table

from auditcore import AuditCore, Settings
from benchmarks.common import bench_registry, console, fresh_database, populate, save_results

# Each script prints {"events": N, "seconds": S, "peak_rss": KiB} for its own process.
PRELUDE = """
import json, resource, sys, time
from auditcore import AuditCore, Settings
from auditcore.readmodel.export import ExportFormat, csv_cells, export_chunks
from auditcore.readmodel.queries import EventQuery
audit = AuditCore(Settings(sys.argv[1], sys.argv[2]))
reader = audit.reader("ws0")
started = time.perf_counter()
events = 0
"""
REPORT = """
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"events": events, "seconds": seconds, "peak_rss": peak}))
"""
SCRIPTS = {
    "open the stores only (floor)": "",
    "auditcore export (streamed, CSV)": """
with open(sys.argv[3], "wb") as out:
    for chunk in export_chunks(reader, EventQuery(), ExportFormat.CSV, progress=None):
        out.write(chunk)
events = reader.count(EventQuery())
""",
    "naive: every event in memory, then CSV": """
import csv
rows, cursor = [], None
while True:
    page = reader.events(EventQuery(limit=1000, cursor=cursor))
    rows += page.items
    cursor = page.next_cursor
    if cursor is None:
        break
with open(sys.argv[3], "w", newline="") as out:
    csv.writer(out).writerows(csv_cells(e.summary()) for e in rows)
events = len(rows)
""",
}


def measure(script: str, settings: Settings, out: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE + script + REPORT, settings.event_store,
         settings.clickhouse, out],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def run(events: int) -> None:
    with fresh_database("ac_bench_export") as url, tempfile.TemporaryDirectory() as directory:
        settings = Settings(url, f"chdb://{directory}/clickhouse")
        with AuditCore(settings, registry=bench_registry()) as audit:
            populate(audit, events, workspaces=1)
            audit.project()
        results = {
            name: measure(script, settings, f"{directory}/out.csv")
            for name, script in SCRIPTS.items()
        }
    exported = int(results["auditcore export (streamed, CSV)"]["events"])
    table = Table(title=f"export of one workspace ({exported:,} events)", title_justify="left")
    for column in ("what", "peak RSS", "above the floor", "seconds", "events/s"):
        table.add_column(column, justify="left" if column == "what" else "right")
    floor = results["open the stores only (floor)"]["peak_rss"] / 1024
    for name, measured in results.items():
        peak = measured["peak_rss"] / 1024
        rate = measured["events"] / measured["seconds"] if measured["events"] else 0
        table.add_row(
            name,
            f"{peak:,.0f} MB",
            f"{peak - floor:,.0f} MB",
            f"{measured['seconds']:.2f}" if measured["events"] else "",
            f"{rate:,.0f}" if measured["events"] else "",
        )
    console.print(table)
    save_results("export", {"events": events, "exported": exported, "results": results})
