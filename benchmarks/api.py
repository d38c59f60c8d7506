"""API throughput under concurrency: ``wrk`` against ``auditcore serve`` (PostgreSQL store,
embedded chDB, projecting in the same process) beside a plain FastAPI + psycopg-pool handler
answering the same by-id question (``benchmarks.plain_api``), in the same run, on the same data.

Each row is one ``wrk`` run at a fixed connection count (``-c``), after a short warm-up: requests
per second and the latency's p50 / p99 as ``wrk --latency`` reports them. By id cycles through
real ids (a Lua script). The rate limit is off (``--rate-limit 0``): it would measure the limit.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from rich.table import Table

from auditcore import AuditCore, Settings
from auditcore.readmodel.queries import EventQuery
from auditcore.tenancy import Directory, Scope
from benchmarks.common import bench_registry, console, fresh_database, populate, save_results

AUDITCORE = str(Path(sys.executable).with_name("auditcore"))
WORKSPACE = "ws3"
ROOT = Path(__file__).resolve().parent.parent
ACTIONS = ("--actions", "benchmarks.bench_actions")


@dataclass(frozen=True)
class Run:
    route: str
    server: str
    clients: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    errors: int


def run(events: int, seconds: float) -> list[Run]:
    if shutil.which("wrk") is None:
        console.print("[yellow]api: skipped, wrk is not installed (apt-get install wrk)[/yellow]")
        return []
    with fresh_database("ac_bench_api") as url, tempfile.TemporaryDirectory() as scratch:
        chdb = f"chdb://{scratch}/chdb"
        with AuditCore(Settings(url, chdb), registry=bench_registry()) as audit:
            console.print(f"api: writing and projecting {events:,} events …")
            populate(audit, events)
            audit.project()
            recorder = audit.app.recorder
            tables = (recorder.events_table_name, recorder.event_ids_table_name)  # type: ignore[attr-defined]
            reader = audit.reader(WORKSPACE)
            page = reader.events(EventQuery(limit=200)).items
            ids = [str(event.event_id) for event in page]
            actor = page[0].actor.id
        directory = Directory(Settings(url, chdb))
        if not any(row.id == WORKSPACE for row in directory.workspaces()):
            directory.create_workspace(WORKSPACE)
        token = directory.create_key(WORKSPACE, "bench", [Scope.READ]).token
        directory.close()
        script = Path(scratch) / "ids.lua"
        script.write_text(_rotating_paths([f"/v1/events/{i}" for i in ids]))
        ours, plain = _free_port(), _free_port()
        env = {**os.environ, "AUDITCORE_EVENT_STORE": url, "AUDITCORE_CLICKHOUSE": chdb}
        env["PYTHONPATH"] = str(ROOT)
        servers = [
            subprocess.Popen(
                [
                    AUDITCORE,
                    "serve",
                    "--port",
                    str(ours),
                    "--rate-limit",
                    "0",
                    "--actions",
                    "benchmarks.bench_actions",
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "benchmarks.plain_api:app",
                    "--port",
                    str(plain),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                env={
                    **env,
                    "PLAIN_API_DB": url,
                    "PLAIN_API_EVENTS": tables[0],
                    "PLAIN_API_IDS": tables[1],
                },
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        ]
        try:
            auth = f"Authorization: Bearer {token}"
            _wait_ready(f"http://127.0.0.1:{ours}/v1/models", auth)
            _wait_ready(f"http://127.0.0.1:{plain}/v1/events/{ids[0]}", "")
            ac, pl = f"http://127.0.0.1:{ours}", f"http://127.0.0.1:{plain}"
            plan = [
                ("event by id", "auditcore", 1, ac, script),
                ("event by id", "FastAPI + PostgreSQL", 1, pl, script),
                ("event by id", "auditcore", 16, ac, script),
                ("event by id", "FastAPI + PostgreSQL", 16, pl, script),
                ("an actor's newest 50", "auditcore", 16,
                 f"{ac}/v1/events?actor_id={actor}&limit=50", None),
                ("hourly stats, 30 days", "auditcore", 16,
                 f"{ac}/v1/stats?interval=hour&since=2026-10-01T00:00:00Z"
                 "&until=2026-10-31T00:00:00Z", None),
                ("/v1/models (authentication only)", "auditcore", 16, f"{ac}/v1/models", None),
            ]  # fmt: skip
            results = [
                _wrk(route, server, clients, target, auth, script_path, seconds)
                for route, server, clients, target, script_path in plan
            ]
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(timeout=30)
    _report(events, results)
    return results


def _rotating_paths(paths: list[str]) -> str:
    listed = ", ".join(f'"{path}"' for path in paths)
    return (
        f"local paths = {{{listed}}}\nlocal n = 0\n"
        "request = function()\n  n = n % #paths + 1\n"
        "  return wrk.format(nil, paths[n])\nend\n"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_ready(url: str, auth: str, timeout: float = 120) -> None:
    headers = dict([auth.split(": ", 1)]) if auth else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer 200 within {timeout:g} s")


def _wrk(
    route: str,
    server: str,
    clients: int,
    target: str,
    auth: str,
    script: Path | None,
    seconds: float,
) -> Run:
    command = ["wrk", "--latency", "-t", str(min(clients, 2)), "-c", str(clients)]
    command += ["-H", auth] + (["-s", str(script)] if script else [])
    # A short warm-up (connections, caches, the first queries' plans), then the measured run.
    subprocess.run([*command, "-d", "1s", target], capture_output=True, check=True)
    done = subprocess.run(
        [*command, "-d", f"{seconds:g}s", target], capture_output=True, check=True, text=True
    )
    out = done.stdout
    console.print(f"  {route} · {server} · {clients} clients: {_line(out, 'Requests/sec')}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return Run(
        route,
        server,
        clients,
        float(_line(out, "Requests/sec")),
        _latency(out, "50%"),
        _latency(out, "99%"),
        errors,
    )


def _line(out: str, name: str) -> str:
    match = re.search(rf"{re.escape(name)}:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"wrk printed no {name}: {out}")
    return match.group(1)


def _latency(out: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"wrk printed no {percentile} latency: {out}")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _report(events: int, results: list[Run]) -> None:
    table = Table(title=f"api throughput — {events:,} events (wrk)", title_justify="left")
    for column in ("route", "server", "clients", "req/s", "p50 ms", "p99 ms", "errors"):
        table.add_column(column, justify="left" if column in ("route", "server") else "right")
    for r in results:
        table.add_row(
            r.route,
            r.server,
            str(r.clients),
            f"{r.requests_per_second:,.0f}",
            f"{r.p50_ms:.1f}",
            f"{r.p99_ms:.1f}",
            str(r.errors),
        )
    console.print(table)
    save_results(f"api_{events}", {"events": events, "rows": [asdict(r) for r in results]})
