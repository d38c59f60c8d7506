"""One owner, many clients: while `auditcore serve` or `project --follow` owns the embedded
chDB directory, every CLI command that reads or operates works anyway, through the owner, with
the same output as without it. Run as a user runs it: a fresh directory, the defaults
(`.auditcore/`), real subprocesses."""

from __future__ import annotations

import difflib
import http.client
import json
import os
import re
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tests.cli_run import AUDITCORE
from tests.test_cli_startup import heavy_imports, run_program

OWNER = Path(".auditcore/clickhouse/owner.json")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITCORE_")}
    return {**env, "COLUMNS": "200"}


def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AUDITCORE, *args],
        check=False,
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _recorded_pid(cwd: Path) -> int | None:
    try:
        return int(json.loads((cwd / OWNER).read_text())["pid"])
    except (OSError, ValueError):
        return None


@contextmanager
def owner(cwd: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    """A real owner process, running until the block ends (then stopped as a user stops it)."""
    process = subprocess.Popen(
        [AUDITCORE, *args],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 90
        while _recorded_pid(cwd) != process.pid:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the owner never wrote owner.json"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT if args[0] == "serve" else signal.SIGTERM)
            process.wait(timeout=60)


def _outputs(cwd: Path, event_id: str, stream_id: str, until: str) -> dict[str, str]:
    """Each affected command's output (stdout; a report's file), keyed by the command.

    Exports and reports record events of their own (now): every figure here is of whole hours
    before ``until``, so they change nothing another run shows."""
    since = (datetime.fromisoformat(until) - timedelta(days=1)).isoformat()
    commands = {
        "query": ["query", "-w", "acme", "--action-prefix", "incident.", "--limit", "5"],
        "query json": ["query", "-w", "acme", "--action-prefix", "monitor.", "-f", "json"],
        "stats": [
            "stats",
            "-w",
            "acme",
            "--interval",
            "hour",
            "--since",
            since,
            "--until",
            until,
            "-f",
            "json",
        ],
        "get": ["get", event_id, "-w", "acme"],
        "history": ["history", stream_id, "-w", "acme"],
        "projections status": ["projections", "status", "-f", "json"],
        "dead letters": ["projections", "dead-letters"],
        "export": ["export", "-w", "acme", "-f", "jsonl", "--filter", "action_prefix=incident."],
        "report": ["report", "-w", "acme", "--since", since, "--until", until, "-o", "r.html"],
    }
    outputs: dict[str, str] = {}
    for name, args in commands.items():
        done = cli(cwd, *args)
        assert done.returncode == 0, f"{name}: {done.stderr}"
        assert "lock" not in done.stderr.lower(), f"{name}: {done.stderr}"
        outputs[name] = done.stdout
    # When a report was generated, and so the moment of its snapshot, is its own.
    report = re.sub(r"generated [\d-]+ [\d:]+ UTC", "", (cwd / "r.html").read_text())
    outputs["report"] = re.sub(r"report began \([\d-]+ [\d:]+ UTC\)", "", report)
    # Who follows each read model is the one true difference (the owner does); positions and
    # times move with the events this test's exports and reports record: all caught up.
    status = json.loads(outputs["projections status"])
    assert all(model["lag"] == 0 for model in status)
    moving = ("followed_by", "position", "head", "updated_at")
    outputs["projections status"] = json.dumps(
        [{k: v for k, v in model.items() if k not in moving} for model in status]
    )
    return outputs


def _same(outputs: dict[str, str], alone: dict[str, str]) -> None:
    for name, text in alone.items():
        diff = difflib.unified_diff(text.splitlines(), outputs[name].splitlines(), lineterm="")
        assert outputs[name] == text, f"{name} differs:\n" + "\n".join(list(diff)[:40])


def test_every_command_works_beside_an_owner_with_the_same_output(tmp_path: Path) -> None:
    assert cli(tmp_path, "demo").returncode == 0  # an afternoon of events, up to now
    until = datetime.now(UTC).replace(minute=0, second=0, microsecond=0).isoformat()
    line = cli(tmp_path, "query", "-w", "acme", "--action-prefix", "incident.", "-f", "jsonl")
    event = json.loads(line.stdout.splitlines()[0])
    event_id, stream_id = event["event_id"], event["stream_id"]
    alone = _outputs(tmp_path, event_id, stream_id, until)

    port = _free_port()
    with owner(tmp_path, "serve", "--port", str(port)) as serving:
        record = tmp_path / OWNER
        assert stat.S_IMODE(record.stat().st_mode) == 0o600
        assert json.loads(record.read_text())["pid"] == serving.pid
        _same(_outputs(tmp_path, event_id, stream_id, until), alone)
        _query_answered_by_the_owner(tmp_path, alone["query"])
        # Without the credential the owner's endpoint runs nothing.
        port = json.loads(record.read_text())["port"]
        for token in ("", "Bearer wrong", "Bearer " + "A" * 43):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request(
                "POST",
                "/statement",
                b'{"format": "TabSeparated"}\nSELECT 1',
                {"Authorization": token},
            )
            assert connection.getresponse().status == 401
            connection.close()
    assert not (tmp_path / OWNER).exists(), "the owner left its credential behind"

    with owner(tmp_path, "project", "--follow"):
        _same(_outputs(tmp_path, event_id, stream_id, until), alone)
    assert not (tmp_path / OWNER).exists()


def _query_answered_by_the_owner(cwd: Path, alone: str) -> None:
    """A `query` beside the owner is the owner's to answer: the client process imports nothing
    heavy (tests/test_cli_startup.py) and prints what the full program prints alone."""
    incidents = ("--action-prefix", "incident.", "--limit", "5")
    done, modules = run_program(cwd, "query", "-w", "acme", *incidents)
    assert (done.returncode, done.stdout) == (0, alone), done.stderr
    assert heavy_imports(modules) == []
    # The user's environment, not the owner's, gives the workspace.
    done, modules = run_program(cwd, "query", *incidents, AUDITCORE_WORKSPACE="acme")
    assert (done.returncode, done.stdout, heavy_imports(modules)) == (0, alone, [])
    done, modules = run_program(cwd, "query", "-w", "nosuch")
    assert done.returncode == 2
    assert done.stderr.startswith("error: no workspace 'nosuch'")
    assert done.stderr.count("\n") == 1
    assert heavy_imports(modules) == []
    # What the owner declines, the full program answers in the client: another event store (the
    # owner's would answer for the wrong one), a command line that does not parse.
    done, modules = run_program(cwd, "query", "-w", "acme", "--event-store", "other.sqlite")
    assert "auditcore.cli" in modules
    done, modules = run_program(cwd, "query", "-w", "acme", "--limit", "many")
    assert done.returncode == 2
    assert done.stderr.startswith("Usage: auditcore query")
    assert "auditcore.cli" in modules


def test_an_owner_killed_outright_leaves_nothing_in_the_way(tmp_path: Path) -> None:
    assert cli(tmp_path, "demo").returncode == 0
    with owner(tmp_path, "project", "--follow") as following:
        following.kill()  # SIGKILL: no clean-up, owner.json stays behind
        following.wait(timeout=30)
    assert (tmp_path / OWNER).exists()
    done = cli(tmp_path, "query", "-w", "acme", "--limit", "3", "-f", "json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["items"]) == 3
    # A credential file another user could read is not trusted (nor sent anywhere).
    with owner(tmp_path, "project", "--follow"):
        (tmp_path / OWNER).chmod(0o644)
        done = cli(tmp_path, "query", "-w", "acme", "--limit", "3", "-f", "json")
        assert done.returncode == 2
        assert "another process is using it" in done.stderr
        assert "Cannot lock" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
