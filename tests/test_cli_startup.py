"""CLI start-up: `auditcore --help`, and a `query` beside a running owner, import none of the
heavy libraries (checked in `sys.modules` of a real process, never timed), and answer exactly
what the full program answers. The query half runs beside a real `serve` in
tests/test_one_owner.py (`test_every_command_works_beside_an_owner_with_the_same_output`),
which calls `heavy_imports` from here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = (
    "fastapi",
    "starlette",
    "uvicorn",
    "pydantic",
    "clickhouse_connect",
    "chdb",
    "eventsourcing",
    "psycopg",
    "psycopg_pool",
    "sqlalchemy",
    "jsonschema",
    "cryptography",
    "jinja2",
    "auditcore.facade",
    "auditcore.cli",
)
"""What a command line answered by the launcher must not import (each costs a tenth of a second
to seconds on a loaded machine)."""

_PROBE = """
import json, sys
arguments, entry, out = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.argv = ["auditcore", *arguments]
if entry == "launcher":
    from auditcore.launcher import main
else:
    from auditcore.cli import main
status = 0
try:
    main()
except SystemExit as exit:
    status = exit.code or 0
with open(out, "w") as file:
    json.dump({"status": status, "modules": sorted(sys.modules)}, file)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITCORE_")}
    return {**env, "COLUMNS": "200", **extra}


def run_program(
    cwd: Path, *arguments: str, entry: str = "launcher", **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the program (the launcher, or the full program) as a fresh process: its output, and
    every module it had imported when it finished."""
    found = cwd / f".modules-{os.getpid()}.json"
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(arguments), entry, str(found)],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    report = json.loads(found.read_text())
    found.unlink()
    done.returncode = report["status"]
    return done, report["modules"]


def heavy_imports(modules: list[str]) -> list[str]:
    return [m for m in modules if m in HEAVY or m.split(".")[0] in HEAVY]


def test_help_is_the_full_programs_help_without_its_imports(tmp_path: Path) -> None:
    for arguments in (["--help"], []):
        fast, modules = run_program(tmp_path, *arguments)
        full, full_modules = run_program(tmp_path, *arguments, entry="full")
        assert (fast.returncode, fast.stdout, fast.stderr) == (
            full.returncode,
            full.stdout,
            full.stderr,
        )
        assert "query" in fast.stdout + fast.stderr
        assert heavy_imports(modules) == [], arguments
        # The check sees them where they are: the full program imports them.
        assert {"pydantic", "sqlalchemy", "clickhouse_connect"} <= set(heavy_imports(full_modules))


def test_a_query_without_an_owner_runs_the_full_program(tmp_path: Path) -> None:
    """No owner: the launcher hands over (the answer is the full program's, a one-line error for
    an unknown workspace) — and it must import what it needs then."""
    done, modules = run_program(tmp_path, "query", "-w", "nosuch")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: no workspace 'nosuch'"), done.stderr
    assert "auditcore.cli" in modules
