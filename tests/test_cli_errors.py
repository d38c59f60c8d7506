"""What a user meets when something is wrong, run as a user runs it: a fresh directory, the
console script in a subprocess. Each failure is one line naming what failed, exit status 2."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import uuid4

import pytest

from auditcore import AuditCore, Settings
from auditcore.errors import ConfigurationError
from tests.cli_run import AUDITCORE


def cli(cwd: Path, *args: str, command: str = AUDITCORE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITCORE_")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return subprocess.run(
        [command, *args],
        cwd=cwd,
        env={**env, "COLUMNS": "100"},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def silent_listener() -> Iterator[int]:
    """A port that accepts connections (the kernel does) and never answers: a stalled server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


@pytest.mark.postgres
def test_postgres_failures_are_told_apart_within_seconds(
    tmp_path: Path, postgres_database: str
) -> None:
    with silent_listener() as stalled:
        cases = {
            "connection refused": f"postgresql://postgres@127.0.0.1:{_free_port()}/x",
            "has no database": f"postgresql://postgres@127.0.0.1:5432/h17a_{uuid4().hex[:12]}",
            "authentication failed": "postgresql://h17a_nobody@127.0.0.1:5432/postgres",
            "(timeout)": f"postgresql://postgres@127.0.0.1:{stalled}/x?connect_timeout=2",
        }
        messages = {}
        for phrase, url in cases.items():
            line = one_line_error(cli(tmp_path, "status", "--event-store", url))
            assert phrase in line, line
            assert "couldn't get a connection" not in line
            messages[phrase] = line
            started = time.monotonic()  # without the interpreter's start-up
            with pytest.raises(ConfigurationError, match=re.escape(phrase)):
                AuditCore(Settings(event_store=url, clickhouse="chdb://unused"))
            assert time.monotonic() - started < 3.5, phrase
    # Each says something the others do not.
    for phrase in messages:
        assert all(phrase not in other for name, other in messages.items() if name != phrase)
    assert "h17a_nobody" in messages["authentication failed"]


def test_an_unreachable_clickhouse_server_is_one_line(tmp_path: Path) -> None:
    refused = f"http://default:@127.0.0.1:{_free_port()}/x"
    line = one_line_error(cli(tmp_path, "projections", "status", "--clickhouse", refused))
    assert "connection refused" in line
    for library_words in ("urllib3", "HTTPConnectionPool", "Max retries", "Driver Exception"):
        assert library_words not in line
    with silent_listener() as stalled:
        url = f"http://default:@127.0.0.1:{stalled}/x"
        line = one_line_error(cli(tmp_path, "projections", "status", "--clickhouse", url))
    assert "(timeout)" in line


def test_a_busy_port_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        line = one_line_error(cli(tmp_path, "serve", "--port", str(port)))
    assert f"port {port} on 127.0.0.1 is already in use" in line


def test_unknown_workspaces_demo_reruns_and_counts(tmp_path: Path) -> None:
    # The README's set-up activates nothing: the command is typed as .venv/bin/auditcore.
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    first = cli(tmp_path, "demo", command=".venv/bin/auditcore")
    assert first.returncode == 0, first.stderr
    assert "Try: .venv/bin/auditcore query -w acme" in first.stdout
    assert "Recorded 20 events" in first.stdout

    def stored() -> list[str]:
        done = cli(tmp_path, "export", "-w", "acme", "-f", "jsonl", "--filter", "source=api")
        return sorted(json.loads(line)["event_id"] for line in done.stdout.splitlines())

    before = stored()
    again = cli(tmp_path, "demo")
    assert again.returncode == 0, again.stderr
    assert "already in workspace 'acme'" in again.stdout
    assert "Q1. What happened to incident 'Public API returning 503'?" in again.stdout
    assert stored() == before

    for command in (
        ["query", "-w", "nosuchws"],
        ["stats", "-w", "nosuchws"],
        ["export", "-w", "nosuchws"],
        ["report", "-w", "nosuchws", "--since", "1d", "-o", "r.html"],
        ["query", "-w", "ACME"],  # workspaces are case-sensitive
    ):
        line = one_line_error(cli(tmp_path, *command))
        assert "no workspace 'nosuchws'" in line or "no workspace 'ACME'" in line, line
    assert not (tmp_path / "r.html").exists()
    # A created workspace without events is known: its answers are empty, not an error.
    assert cli(tmp_path, "workspaces", "create", "quiet").returncode == 0
    empty = cli(tmp_path, "query", "-w", "quiet", "-f", "json")
    assert (empty.returncode, json.loads(empty.stdout)["items"]) == (0, [])

    lines = "".join(
        json.dumps(
            {
                "action": "incident.comment_added",
                "workspace_id": "acme",
                "metadata": {"body": f"c{n}"},
            }
        )
        + "\n"
        for n in range(3)
    )
    (tmp_path / "three.jsonl").write_text(lines)
    assert cli(tmp_path, "project").returncode == 0  # the exports above recorded themselves
    assert cli(tmp_path, "import", "three.jsonl").returncode == 0
    done = cli(tmp_path, "project")
    assert "Caught up: 3 new events projected into each of 4 read models." in done.stdout
