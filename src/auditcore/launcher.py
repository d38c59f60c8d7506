"""The ``auditcore`` program's entry point: answers what it can without importing the commands.

Importing every command module (FastAPI, SQLAlchemy, pydantic, eventsourcing,
clickhouse-connect, cryptography…) takes seconds on a loaded machine. Two things a user types
often need none of it:

- ``auditcore`` and ``auditcore --help``: the command list is printed from ``COMMANDS``, each
  command's name and help as the full program states them (tests/test_cli_startup.py holds
  the two outputs equal, so the table cannot drift from the commands);
- ``auditcore query …`` while a ``serve`` or ``project --follow`` owns the embedded engine:
  the command line goes to the owner (``auditcore.clickhouse.owner``, ``POST /command``),
  which parses it with the real ``query`` command, answers it with its own open engine and
  store, and sends back what the command would have printed and its exit status.

Everything else, and anything the owner declines, runs the full program (``auditcore.cli``).

Failure semantics: the fast path never changes an answer. The owner declines (and the full
program answers here) when the command line does not parse, asks for help, takes a value from
the owner's environment rather than the user's, or names another event store; an owner that is
gone, not answering or answering anything else also means the full program answers here. A
query is a read: one cut off in flight is simply asked again by the full program.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
from typing import Any

HELP = "Record audit events, project them into ClickHouse, and ask who did what, when."

COMMANDS: tuple[tuple[str, str], ...] = (
    ("serve", "Serve the HTTP API (OpenAPI docs at /docs) and the web viewer (at /)."),
    (
        "verify",
        "Recompute every leaf from the store, rebuild the Merkle trees and check them against\n"
        "the stored logs and every signed checkpoint (stored, published, and given with\n"
        "--checkpoint), and every retention archive against the leaves it replaced. Exit "
        "status 0\nif everything matches, 1 at the first divergence.",
    ),
    (
        "erase",
        "Erase a subject's personal data (crypto-shredding): destroy its keys, record the\n"
        "erasure, re-project its events. Safe to run again: it finishes an interrupted erasure.",
    ),
    (
        "demo",
        "Record a realistic afternoon of incident and monitor activity, project it into\n"
        "ClickHouse and answer a few questions from the read model.",
    ),
    ("migrate", "Create the event store's tables and every read model's ClickHouse table."),
    (
        "project",
        "Bring every read model up to date with the event store, then exit (or --follow: keep\n"
        "following, whatever fails meanwhile; each read model retries on its own).",
    ),
    (
        "status",
        "Every process dispatching into this event store, as it last reported (every 5 s by\n"
        "default): queue depth, events accepted, written and failed, batches, latencies. A "
        "running\ndispatcher that misses three reports is flagged silent. Read models: "
        "`projections status`.",
    ),
    ("record", "Record one standalone event (in the event store; `project` makes it queryable)."),
    (
        "import",
        "Dispatch every event of a JSON Lines file in batches, then show the dispatcher's stats.",
    ),
    ("history", "Show a stream's full history, in version order (or as it was at --as-of)."),
    ("get", "Show one event by its id."),
    ("query", "Find events, newest first, a page at a time."),
    (
        "export",
        "Export every matching event (newest first) as CSV or JSON Lines, streamed with flat\n"
        "memory. The export is itself recorded as an audit event.",
    ),
    (
        "report",
        "Write a self-contained HTML audit report of one workspace and period: summary,\n"
        "activity chart, top actions/actors/targets, incident and monitor timings, the events.",
    ),
    (
        "stats",
        "Count events per interval, by action, actor or source (default: the last 24 hours).",
    ),
    ("projections", "Inspect the read models and rebuild them from the event store."),
    ("workspaces", "Create and list workspaces (tenants)."),
    ("keys", "Issue, list and revoke API keys (one workspace each; read and/or write)."),
    (
        "integrity",
        "Tamper evidence: the per-workspace Merkle logs, signing keys and checkpoints.",
    ),
    (
        "actions",
        "The registered actions; register your own as JSON Schema (no Python needed).",
    ),
    (
        "retention",
        "Retention: how long each workspace keeps its events; archive and prune older ones.",
    ),
    ("archive", "Archives of pruned events: check them, restore them."),
    ("streams", "Log streams: deliver a workspace's events to a webhook, SIEM or broker."),
)
"""Each command and group of the full program, in its order, with the help its list shows."""

FORWARDED_OPTIONS = {
    "AUDITCORE_WORKSPACE": "--workspace",
    "AUDITCORE_EVENT_STORE": "--event-store",
    "AUDITCORE_CLICKHOUSE": "--clickhouse",
}
"""The query's options a user may give in the environment: sent to the owner as options (the
owner must not read its own environment for them)."""

COMMAND_TIMEOUT = 120.0
"""Seconds the owner may take to answer a query (it waits for its engine like any statement)."""


def main() -> None:
    arguments = sys.argv[1:]
    if arguments in ([], ["--help"]):
        help_app()()
    if arguments[0] == "query":
        answered = through_owner(arguments)
        if answered is not None:
            status, out, err = answered
            sys.stdout.write(out)
            sys.stdout.flush()
            sys.stderr.write(err)
            sys.exit(status)
    from auditcore.cli import main as full_program  # noqa: PLC0415 - the point of this module

    full_program()


def help_app() -> Any:
    """The full program's top level with a placeholder per command: its list, no more."""
    import typer  # noqa: PLC0415 - only for help

    app = typer.Typer(
        help=HELP, no_args_is_help=True, rich_markup_mode="rich", pretty_exceptions_enable=False
    )
    for name, text in COMMANDS:
        app.command(name, help=text)(_placeholder)
    return app


def _placeholder() -> None:
    """Never run: ``help_app`` only lists."""


def through_owner(arguments: list[str]) -> tuple[int, str, str] | None:
    """The owner's answer to this command line (exit status, stdout, stderr), or None when
    there is no owner, or it declines: the full program then answers here."""
    if "--help" in arguments:
        return None
    owner = _owner(_clickhouse(arguments))
    if owner is None:
        return None
    forwarded = list(arguments)
    for variable, option in FORWARDED_OPTIONS.items():
        if os.environ.get(variable):  # as Click, an empty one is unset; the line still wins
            forwarded[1:1] = [option, os.environ[variable]]
    body = json.dumps(
        {
            "argv": forwarded,
            "cwd": os.getcwd(),
            "stdout_tty": sys.stdout.isatty(),
            "stderr_tty": sys.stderr.isatty(),
            "columns": shutil.get_terminal_size().columns,
            "environ": {k: v for k, v in os.environ.items() if k in _TERMINAL},
        }
    ).encode()
    connection = http.client.HTTPConnection("127.0.0.1", owner["port"], timeout=COMMAND_TIMEOUT)
    try:
        connection.request("POST", "/command", body, {"Authorization": f"Bearer {owner['token']}"})
        response = connection.getresponse()
        data = response.read()
    except OSError:
        return None
    finally:
        connection.close()
    if response.status != 200:
        return None
    try:
        answer = json.loads(data)
        return int(answer["status"]), str(answer["stdout"]), str(answer["stderr"])
    except (ValueError, KeyError, TypeError):
        return None


_TERMINAL = frozenset({"TERM", "COLORTERM", "NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES"})
"""What decides how output looks in the user's terminal."""


def _clickhouse(arguments: list[str]) -> str:
    """The ``--clickhouse`` the command line gives (its last), else the environment's or the
    default; a malformed command line is left to the full program to tell."""
    found = os.environ.get("AUDITCORE_CLICKHOUSE", "chdb://.auditcore/clickhouse")
    for index, argument in enumerate(arguments):
        if argument == "--clickhouse" and index + 1 < len(arguments):
            found = arguments[index + 1]
        elif argument.startswith("--clickhouse="):
            found = argument.partition("=")[2]
    return found


def _owner(clickhouse: str) -> dict[str, Any] | None:
    """The owner of the embedded engine at ``clickhouse``, as ``owner.json`` records it."""
    if not clickhouse.startswith("chdb://"):
        return None
    from auditcore.clickhouse.connection import ClickHouseTarget  # noqa: PLC0415
    from auditcore.clickhouse.owner import read_owner  # noqa: PLC0415

    record = read_owner(ClickHouseTarget(clickhouse).chdb_path)
    return None if record is None else {"port": record.port, "token": record.token}


if __name__ == "__main__":
    main()
