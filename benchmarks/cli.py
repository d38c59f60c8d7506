"""Command-line start-up: how long a user waits for `auditcore --help`, and for a `query`
answered through a running `auditcore serve` (the owner of the embedded engine), each a fresh
process as typed at a shell. Beside them: a bare interpreter, and the import time of the
modules (`python -X importtime`), largest first, to show where start-up goes.

Target: `--help` and a `query` through a running server under 1 s each. Beside each wall time,
the CPU time (user + system) of the process, which a loaded machine inflates less."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

from benchmarks.common import console, median, save_results

AUDITCORE = str(Path(sys.executable).with_name("auditcore"))


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AUDITCORE_")}


def _wall(command: list[str], cwd: Path, runs: int) -> tuple[float, float, float]:
    """Median and best wall time of ``command`` over ``runs`` runs, and its median CPU time
    (user + system: what load inflates less), in seconds."""
    times, cpu = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, check=True)
        times.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return median(times), min(times), median(cpu)


def _imports(module: str) -> list[tuple[str, float]]:
    """What ``import module`` imports directly, with each one's cumulative import time in
    seconds, largest first."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    totals: dict[str, float] = {}
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if len(name) - len(name.lstrip()) == 3:  # one level below `module` (importtime's indent)
            totals[name.strip()] = int(cumulative) / 1e6
    return sorted(totals.items(), key=lambda item: -item[1])[:8]


def run(runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="auditcore-cli-") as directory:
        cwd = Path(directory)
        subprocess.run([AUDITCORE, "demo"], cwd=cwd, env=_env(), capture_output=True, check=True)
        rows = {
            "python -c pass (the interpreter alone)": _wall(
                [sys.executable, "-c", "pass"], cwd, runs
            ),
            "auditcore --help": _wall([AUDITCORE, "--help"], cwd, runs),
            "auditcore query -w acme --limit 5 (opens the engine itself)": _wall(
                [AUDITCORE, "query", "-w", "acme", "--limit", "5"], cwd, runs
            ),
        }
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [AUDITCORE, "serve", "--port", str(port)],
            cwd=cwd,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            owner = cwd / ".auditcore/clickhouse/owner.json"
            deadline = time.monotonic() + 120
            while not owner.exists() or json.loads(owner.read_text())["pid"] != server.pid:
                if time.monotonic() > deadline:
                    raise RuntimeError("auditcore serve did not start")
                time.sleep(0.1)
            rows["auditcore query -w acme --limit 5 (through a running serve)"] = _wall(
                [AUDITCORE, "query", "-w", "acme", "--limit", "5"], cwd, runs
            )
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=60)
    imports = _imports("auditcore.cli")
    table = Table(title=f"CLI start-up, seconds over {runs} runs (target: under 1 s)")
    for column in ("what", "wall median", "wall best", "CPU median"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for name, (middle, best, cpu) in rows.items():
        table.add_row(name, f"{middle:.2f}", f"{best:.2f}", f"{cpu:.2f}")
    console.print(table)
    console.print(
        "import auditcore.cli, largest imports (s): "
        + ", ".join(f"{name} {seconds:.2f}" for name, seconds in imports)
    )
    console.print(f"load average when done: {os.getloadavg()[0]:.1f}")
    save_results(
        "cli",
        {
            "runs": runs,
            "seconds": {
                name: {"wall_median": m, "wall_best": b, "cpu_median": c}
                for name, (m, b, c) in rows.items()
            },
            "imports": dict(imports),
            "load_average": os.getloadavg()[0],
        },
    )
