"""What every ``auditcore`` command shares: the consoles and the common options."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import sys
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from auditcore.clickhouse.cluster import CLUSTER_VARIABLE
from auditcore.clickhouse.connection import CLICKHOUSE_VARIABLE, DEFAULT_CLICKHOUSE
from auditcore.errors import NotFoundError, UnknownWorkspaceError
from auditcore.events.envelope import Actor, ActorType
from auditcore.render import OutputFormat
from auditcore.store.settings import EVENT_STORE_VARIABLE, Settings
from auditcore.timespec import parse_moment

if TYPE_CHECKING:
    from auditcore.facade import AuditCore

# Piped output is read by people too (less, CI logs): do not squeeze it into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 180)
errors = Console(stderr=True)

EventStoreOption = Annotated[
    str,
    typer.Option(
        "--event-store",
        envvar=EVENT_STORE_VARIABLE,
        help="postgresql:// URL, or path to a SQLite file (the embedded default).",
    ),
]
ClickHouseOption = Annotated[
    str,
    typer.Option(
        "--clickhouse",
        envvar=CLICKHOUSE_VARIABLE,
        help="chdb://PATH (embedded, the default) or http(s)://user:pass@host:port/database.",
    ),
]
ClusterOption = Annotated[
    str | None,
    typer.Option("--cluster", envvar=CLUSTER_VARIABLE, help="ClickHouse cluster for ON CLUSTER."),
]
WorkspaceOption = Annotated[
    str, typer.Option("--workspace", "-w", envvar="AUDITCORE_WORKSPACE", help="Workspace (tenant).")
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
FromStoreOption = Annotated[
    bool, typer.Option("--from-store", help="Read the event store, not the read model.")
]


def parse_moment_option(value: str | None) -> datetime | None:
    return parse_moment(value) if value else None


MomentOption = typer.Option(
    parser=parse_moment_option,
    metavar="TIME",
    help="ISO 8601 (UTC unless zoned) or an age: 30m, 6h, 7d.",
)
RecordedOption = typer.Option(
    parser=parse_moment_option,
    metavar="TIME",
    help="When it was recorded (not when it occurred): ISO 8601 or an age, e.g. 7d.",
)


def open_core(
    event_store: str, clickhouse: str = DEFAULT_CLICKHOUSE, cluster: str | None = None
) -> AuditCore:
    from auditcore.facade import AuditCore  # noqa: PLC0415 - not for --help

    # The options given; the rest (AUDITCORE_STALL_AFTER) from the environment.
    settings = replace(
        Settings.from_env(),
        event_store=event_store,
        clickhouse=clickhouse,
        clickhouse_cluster=cluster,
    )
    return AuditCore(settings)


def cli_actor() -> Actor:
    """Who is at the command line: recorded as the actor of what the CLI itself records."""
    user = getpass.getuser()
    return Actor(
        id=f"{user}@{socket.gethostname()}"[:256],
        type=ActorType.USER,
        name=f"{user} (auditcore CLI)"[:256],
    )


def known_workspace(audit: AuditCore, workspace: str) -> str:
    """``workspace`` if it holds events or was created; otherwise a one-line error (exit 2):
    a misspelt workspace must not read as an empty answer."""
    if audit.app.event_ids.holds_workspace(workspace):
        return workspace
    # Only now: the directory's SQLAlchemy takes a while to import.
    from auditcore.tenancy.directory import Directory  # noqa: PLC0415

    directory = Directory(audit.settings)
    try:
        directory.workspace(workspace)
    except NotFoundError:
        raise UnknownWorkspaceError(
            f"no workspace {workspace!r}: nothing was ever recorded in it and it was not "
            "created (`auditcore workspaces list` shows the created ones)"
        ) from None
    finally:
        directory.close()
    return workspace


def typed_command() -> str:
    """How the user can type this command again: ``auditcore`` when that is on PATH, else its
    path (``.venv/bin/auditcore`` after the README's set-up, which activates nothing)."""
    script = Path(sys.argv[0])
    found = shutil.which(script.name)
    if found and Path(found).resolve() == script.resolve():
        return script.name
    typed = os.path.abspath(script)  # as typed: a symlinked .venv stays .venv
    relative = os.path.relpath(typed)
    return relative if not relative.startswith("..") else typed
