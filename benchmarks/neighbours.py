"""Noisy neighbours: what workspace A sees of the server while workspace B leans on it.

One `auditcore serve` process (PostgreSQL event store, embedded chDB, processors in-process,
default limits), two workspaces with half the events each. A's probe asks a list query and
`/healthz` every 50 ms; its latencies are measured first on the idle server, then while B runs
12 CSV exports at once (retrying after each 429, as a client should) and 3 live resumes from
`Last-Event-ID: 0` (each starting over once it has caught up), all in the same run. B's load
runs in a process of its own, so the measuring client does not compete with it for the GIL.
Optionally the same load again against a server with the limits off, for comparison.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from auditcore import AuditCore, Settings
from auditcore.tenancy.directory import Directory, Scope
from benchmarks.common import (
    bench_registry,
    console,
    fresh_database,
    populate,
    realistic_drafts,
    save_results,
)

A, B = "ws0", "ws1"
ADMIN = "admin"
EXPORTS, RESUMES = 12, 3
PROBE_INTERVAL = 0.05
LIMITS_OFF = [
    "--rate-limit=0", "--max-exports=0", "--max-reports=0", "--max-live=0",
    "--query-timeout=0", "--query-memory=0", "--query-rows=0", "--bulk-cpu=0",
]  # fmt: skip


@dataclass
class Probe:
    """A's latencies, in milliseconds."""

    listing: list[float]
    health: list[float]
    refused: int

    def p(self, which: str, quantile: float) -> float:
        values = sorted(getattr(self, which))
        if not values:
            return 0.0
        if quantile == 0.5:
            return statistics.median(values)
        return values[min(len(values) - 1, int(quantile * len(values)))]


def run(events: int, seconds: float, compare_unlimited: bool = False) -> None:
    with fresh_database("ac_bench_neighbours") as url, tempfile.TemporaryDirectory() as chdb:
        settings = Settings(url, f"chdb://{chdb}/clickhouse")
        with AuditCore(settings, registry=bench_registry()) as audit:
            populate(audit, events, workspaces=2)
        # Live ids are opaque: a resume has caught up once it has received B's events.
        head = sum(1 for d in realistic_drafts(events, workspaces=2) if d["workspace_id"] == B)
        keys = _issue_keys(settings)
        results: dict[str, Any] = {}
        with _server(settings, []) as server:
            _wait_projected(server, keys[ADMIN])
            idle = _probe(server, keys[A], seconds)
            busy, load = _under_load(server, keys, head, seconds)
        results["limits on"] = {"idle": idle, "busy": busy, "load": load}
        if compare_unlimited:
            with _server(settings, LIMITS_OFF) as server:
                _wait_projected(server, keys[ADMIN])
                unlimited, unlimited_load = _under_load(server, keys, head, seconds)
            results["limits off"] = {"busy": unlimited, "load": unlimited_load}
    _report(events, seconds, results)


def _issue_keys(settings: Settings) -> dict[str, str]:
    directory = Directory(settings)
    try:
        keys = {}
        for workspace in (A, B):
            directory.create_workspace(workspace)
            keys[workspace] = directory.create_key(workspace, "bench", [Scope.READ]).token
        keys[ADMIN] = directory.create_key(A, "bench-admin", [Scope.READ, Scope.ADMIN]).token
        return keys
    finally:
        directory.close()


class _server:  # noqa: N801 - used as a context manager, like open()
    def __init__(self, settings: Settings, options: list[str]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            str(Path(sys.executable).with_name("auditcore")), "serve", "--port", str(self.port),
            "--actions", "benchmarks.bench_actions", *options,
        ]  # fmt: skip
        root = Path(__file__).parent.parent
        environment = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
            "AUDITCORE_EVENT_STORE": settings.event_store,
            "AUDITCORE_CLICKHOUSE": settings.clickhouse,
        }
        self.process = subprocess.Popen(
            command,
            env=environment,
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self) -> _server:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the server did not start")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not answer in 120 s")

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _wait_projected(server: _server, admin_key: str) -> None:
    """Until every read model has caught up with the store: "idle" must not include the
    server's own catch-up."""
    headers = {"Authorization": f"Bearer {admin_key}"}
    with console.status("the server's processors catch up"):
        while True:
            response = httpx.get(f"{server.url}/readyz", headers=headers, timeout=60)
            processors = response.json().get("processors") or []
            if processors and all(p["lag"] == 0 for p in processors):
                return
            time.sleep(1)


def _probe(server: _server, key: str, seconds: float) -> Probe:
    """A's list query and /healthz, each every ``PROBE_INTERVAL`` seconds, for ``seconds``."""
    result = Probe([], [], 0)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, timeout=60) as client:
        client.get("/v1/events", headers=headers)  # warm-up
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            response = client.get("/v1/events", params={"limit": 50}, headers=headers)
            listed = time.perf_counter()
            if response.status_code == 200:
                result.listing.append((listed - started) * 1000)
            else:
                result.refused += 1
            client.get("/healthz")
            result.health.append((time.perf_counter() - listed) * 1000)
            time.sleep(max(0.0, PROBE_INTERVAL - (time.perf_counter() - started)))
    return result


def _under_load(
    server: _server, keys: dict[str, str], head: int, seconds: float
) -> tuple[Probe, dict[str, int]]:
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    results = context.Queue()
    load = context.Process(target=_load, args=(server.url, keys[B], head, stop, results))
    load.start()
    time.sleep(1.0)  # the exports and resumes are under way
    try:
        probe = _probe(server, keys[A], seconds)
    finally:
        stop.set()
    counts: dict[str, int] = results.get(timeout=120)
    load.join(timeout=60)
    return probe, counts


def _load(url: str, key: str, head: int, stop: EventType, results: Any) -> None:
    """B: ``EXPORTS`` exports and ``RESUMES`` far-behind live resumes (each over once it has
    received B's ``head`` events), until ``stop``."""
    counts = {"exports": 0, "refused": 0, "bytes": 0, "resumes": 0}
    lock = threading.Lock()

    def count(name: str, amount: int = 1) -> None:
        with lock:
            counts[name] += amount

    def export() -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as client:
            while not stop.is_set():
                try:
                    with client.stream("GET", "/v1/events/export", timeout=60) as response:
                        if response.status_code == 429:
                            count("refused")
                            stop.wait(float(response.headers.get("Retry-After", "1")))
                            continue
                        for chunk in response.iter_raw():
                            count("bytes", len(chunk))
                            if stop.is_set():
                                return
                        count("exports")
                except httpx.HTTPError:
                    stop.wait(1)

    def resume() -> None:
        headers = {"Authorization": f"Bearer {key}", "Last-Event-ID": "0"}
        with httpx.Client(base_url=url, headers=headers) as client:
            while not stop.is_set():
                try:
                    with client.stream("GET", "/v1/live", timeout=60) as response:
                        if response.status_code == 429:
                            count("refused")
                            stop.wait(1)
                            continue
                        received = 0
                        for line in response.iter_lines():
                            if stop.is_set():
                                return
                            received += line == "event: audit_event"
                            if received >= head - 50:
                                count("resumes")
                                break
                except httpx.HTTPError:
                    stop.wait(1)

    threads = [threading.Thread(target=export) for _ in range(EXPORTS)]
    threads += [threading.Thread(target=resume) for _ in range(RESUMES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(counts)


def _report(events: int, seconds: float, results: dict[str, Any]) -> None:
    on = results["limits on"]
    idle, busy = on["idle"], on["busy"]
    off = results.get("limits off")
    table = Table(
        title=f"noisy neighbours: A's latency while B runs {EXPORTS} exports and {RESUMES} "
        f"far-behind live resumes ({events:,} events, {seconds:.0f} s per phase)",
        title_justify="left",
    )
    columns = ["A's figure (ms)", "idle server", "B busy", "ratio (target ≤ 3x)"]
    if off:
        columns += ["B busy, limits off", "ratio"]
    for column in columns:
        table.add_column(column, justify="left" if column.startswith("A's") else "right")
    for label, which, quantile in [
        ("list query p50", "listing", 0.5),
        ("list query p99", "listing", 0.99),
        ("/healthz p99", "health", 0.99),
    ]:
        base, loaded = idle.p(which, quantile), busy.p(which, quantile)
        row = [label, f"{base:.1f}", f"{loaded:.1f}", f"{loaded / base:.2f}x"]
        if off:
            unlimited = off["busy"].p(which, quantile)
            row += [f"{unlimited:.1f}", f"{unlimited / base:.2f}x"]
        table.add_row(*row)
    console.print(table)
    for name, result in [("limits on", on), ("limits off", off)]:
        if result:
            load = result["load"]
            console.print(
                f"B with {name}: {load['exports']} exports completed "
                f"({load['bytes'] / 1e6:,.0f} MB), {load['refused']} refused with 429, "
                f"{load['resumes']} far-behind resumes caught up; A refused "
                f"{result['busy'].refused} times"
            )
    save_results(
        "neighbours",
        {
            "events": events,
            "seconds": seconds,
            "results": {
                name: {
                    phase: value.__dict__ if isinstance(value, Probe) else value
                    for phase, value in result.items()
                }
                for name, result in results.items()
            },
        },
    )
