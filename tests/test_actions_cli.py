"""From a fresh directory, as a user would: register an action from a JSON Schema file, record
and import it; Python actions from a module in the current directory or a file; bad ones are
one line and exit 2; the README's `record member.invited` example after the demo."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.cli_run import AUDITCORE

pytestmark = pytest.mark.store_only

DEPLOY = {
    "type": "object",
    "properties": {
        "service": {"type": "string"},
        "commit": {"type": "string", "pattern": "^[0-9a-f]{7,40}$"},
    },
    "required": ["service", "commit"],
}


def run(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AUDITCORE_") and key != "PYTHONPATH"
    }
    env["COLUMNS"] = "200"
    return subprocess.run(
        [AUDITCORE, *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_register_a_json_schema_then_record_and_import(tmp_path: Path) -> None:
    (tmp_path / "deploy.json").write_text(json.dumps(DEPLOY))
    first = run(tmp_path, "actions", "register", "deploy.started", "--schema", "deploy.json")
    assert first.returncode == 0, first.stderr
    assert "registered schema version 1, for every workspace" in first.stdout
    again = run(tmp_path, "actions", "register", "deploy.started", "--schema", "deploy.json")
    assert "already registered (nothing changed)" in again.stdout
    listed = run(tmp_path, "actions")
    assert "deploy.started" in listed.stdout
    assert "JSON Schema" in listed.stdout

    recorded = run(
        tmp_path, "record", "deploy.started", "-w", "acme", "-f", "json",
        "-m", '{"service": "api", "commit": "abc1234"}',
    )  # fmt: skip
    assert recorded.returncode == 0, recorded.stderr
    assert json.loads(recorded.stdout)[0]["metadata"] == {"commit": "abc1234", "service": "api"}
    refused = run(
        tmp_path,
        "record",
        "deploy.started",
        "-w",
        "acme",
        "-m",
        '{"service": "api", "commit": "abc1234", "env": "prod"}',
    )
    assert refused.returncode == 2
    assert "metadata.env: undeclared key" in refused.stderr

    lines = [
        {
            "action": "deploy.started",
            "workspace_id": "acme",
            "metadata": {"service": "a", "commit": "abc1234"},
        },
        {"action": "deploy.started", "workspace_id": "acme", "metadata": {"service": 1, "x": 2}},
        {
            "action": "deploy.started",
            "workspace_id": "acme",
            "metadata": {"service": "b", "commit": "def5678"},
        },
    ]
    (tmp_path / "events.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    imported = run(tmp_path, "import", "events.jsonl")
    assert imported.returncode == 2
    assert "line 2" in imported.stderr
    for every in ("metadata.service", "metadata.x", "metadata.commit"):
        assert every in imported.stderr  # every problem of the bad line, at once
    assert "1 line(s) skipped" in imported.stderr


def test_bad_schemas_and_workspaces_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(
        '{"type": "object", "properties": {"x": {"pattern": "(?<=a)"}}}'
    )
    (tmp_path / "broken.json").write_text('{"type": ')
    bad = one_line_error(run(tmp_path, "actions", "register", "x.y", "--schema", "bad.json"))
    assert "RE2" in bad
    assert "not valid JSON" in one_line_error(
        run(tmp_path, "actions", "register", "x.y", "--schema", "broken.json")
    )
    assert "missing.json" in one_line_error(
        run(tmp_path, "actions", "register", "x.y", "--schema", "missing.json")
    )
    assert "no workspace 'nosuchws'" in one_line_error(
        run(tmp_path, "actions", "register", "x.y", "--schema", "-", "-w", "nosuchws", stdin="{}")
    )


MODULE = """
from pydantic import BaseModel
from auditcore import default_registry

class Shipped(BaseModel):
    order_id: str

default_registry.register("order.shipped", Shipped)
"""


def test_python_actions_from_the_current_directory_or_a_file(tmp_path: Path) -> None:
    package = tmp_path / "myapp"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "audit_actions.py").write_text(MODULE)
    (tmp_path / "loose.py").write_text(MODULE)
    (tmp_path / "broken.py").write_text("raise RuntimeError('boom at import')\n")
    for given in ("myapp.audit_actions", "loose.py", str(tmp_path / "loose.py")):
        done = run(
            tmp_path,
            "record",
            "order.shipped",
            "-w",
            "acme",
            "--actions",
            given,
            "-m",
            '{"order_id": "o1"}',
        )
        assert done.returncode == 0, (given, done.stderr)
    assert "ModuleNotFoundError" in one_line_error(
        run(tmp_path, "record", "order.shipped", "-w", "acme", "--actions", "nosuch.module")
    )
    assert "RuntimeError: boom at import" in one_line_error(
        run(tmp_path, "record", "order.shipped", "-w", "acme", "--actions", "broken.py")
    )
    assert "no file" in one_line_error(run(tmp_path, "serve", "--actions", "./nofile.py"))
    listed = run(tmp_path, "actions", "--actions", "myapp.audit_actions")
    assert "order.shipped" in listed.stdout


def test_the_readme_record_example_works_after_the_demo(tmp_path: Path) -> None:
    demo = run(tmp_path, "demo")
    assert demo.returncode == 0, demo.stderr
    example = run(
        tmp_path, "record", "member.invited", "-w", "acme", "--actor", "user_alice",
        "--actor-type", "user", "-t", "user:user_bob:Bob",
        "-m", '{"email": "bob@acme.example", "role": "admin"}',
    )  # fmt: skip
    assert example.returncode == 0, example.stderr
    assert "member.invited" in run(tmp_path, "actions").stdout
    again = run(tmp_path, "demo")  # the demo's registrations are the same schemas: no new version
    assert again.returncode == 0, again.stderr
    assert run(tmp_path, "actions").stdout.count("member.invited") == 1
