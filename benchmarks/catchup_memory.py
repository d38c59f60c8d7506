"""One process catching every read model up, one after another, reporting its peak resident
memory (``VmHWM``) as it goes: run by ``benchmarks.catchup`` as a subprocess, so the peak is
this work's alone.

    python -m benchmarks.catchup_memory EVENT_STORE_URL CHDB_DIR DATABASE BATCH_SIZE

Prints one JSON object: the peak after opening the stores (the floor), after each read model,
and the events and seconds of the whole catch-up.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from auditcore import AuditCore, Settings
from auditcore.clickhouse.connection import ClickHouseTarget, connect
from auditcore.projection.runner import ProjectionRunner
from benchmarks.common import bench_registry


def peak_mb() -> float:
    """This process's peak resident set so far, in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main(store: str, chdb: str, database: str, batch_size: int) -> dict[str, object]:
    target = ClickHouseTarget(f"chdb://{chdb}?database={database}")
    with (
        AuditCore(Settings(store, f"chdb://{chdb}"), registry=bench_registry()) as audit,
        connect(target) as client,
    ):
        runner = ProjectionRunner(audit.app, target, audit.read_models, batch_size=batch_size)
        runner.migrate(client)
        result: dict[str, object] = {"floor_mb": peak_mb()}
        started, events = time.perf_counter(), 0
        for processor in runner.processors(client):
            events = max(events, processor.catch_up())
            result[processor.model.name + "_mb"] = peak_mb()
        result |= {"events": events, "seconds": time.perf_counter() - started}
        result["peak_mb"] = peak_mb()
        return result


if __name__ == "__main__":
    store, chdb, database, batch = sys.argv[1:5]
    print(json.dumps(main(store, chdb, database, int(batch))))
