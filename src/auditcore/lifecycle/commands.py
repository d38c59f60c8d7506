"""``auditcore retention …`` and ``auditcore archive …``: retention policies, pruning runs,
and archives from the shell."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from auditcore.cli_options import (
    ClickHouseOption,
    EventStoreOption,
    cli_actor,
    console,
    errors,
    open_core,
)
from auditcore.clickhouse.connection import DEFAULT_CLICKHOUSE
from auditcore.errors import ConfigurationError
from auditcore.facade import AuditCore
from auditcore.integrity.settings import IntegritySettings, read_verifier
from auditcore.lifecycle.archive import ArchiveError, check_archive
from auditcore.lifecycle.restore import restore_archive
from auditcore.lifecycle.retention import ARCHIVE_DIR_VARIABLE, Policy, Retention
from auditcore.progress import EventsProgress
from auditcore.store.settings import DEFAULT_EVENT_STORE, Settings

retention_app = typer.Typer(
    help="Retention: how long each workspace keeps its events; archive and prune older ones.",
    no_args_is_help=True,
)
archive_app = typer.Typer(help="Archives of pruned events: check them, restore them.")

ArchiveDirOption = Annotated[
    Path | None,
    typer.Option(
        "--archive-dir",
        envvar=ARCHIVE_DIR_VARIABLE,
        help="Directory that archives are written to before events are pruned.",
    ),
]
PublicKeyOption = Annotated[
    list[Path] | None,
    typer.Option("--public-key", help="Verifier key file to trust (repeatable)."),
]


def _describe(policy: Policy) -> str:
    days = "kept forever" if policy.days is None else f"{policy.days} days"
    return f"{days} (the default)" if policy.inherited else days


@retention_app.command("set")
def set_policy(
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="The workspace (else --default).")
    ] = None,
    default: Annotated[
        bool, typer.Option("--default", help="Set the default for workspaces without one.")
    ] = False,
    days: Annotated[int | None, typer.Option(help="Keep events this many days.")] = None,
    forever: Annotated[bool, typer.Option("--forever", help="Keep events forever.")] = False,
    inherit: Annotated[
        bool, typer.Option("--inherit", help="Drop the workspace's own policy (-w).")
    ] = False,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
) -> None:
    """Set a workspace's retention policy (-w), or the default (--default)."""
    if (workspace is None) == (not default):
        raise typer.BadParameter("give exactly one of --workspace or --default")
    if sum([days is not None, forever, inherit]) != 1:
        raise typer.BadParameter("give exactly one of --days N, --forever or --inherit")
    if inherit and workspace is None:
        raise typer.BadParameter("--inherit applies to a workspace (-w)")
    with AuditCore(Settings(event_store)) as audit:
        retention = Retention(audit)
        try:
            if inherit:
                assert workspace is not None
                policy = retention.inherit_default(workspace, actor=cli_actor(), source="cli")
            else:
                policy = retention.set_policy(
                    workspace, None if forever else days, actor=cli_actor(), source="cli"
                )
        finally:
            retention.close()
    console.print(f"{workspace or 'default'}: {_describe(policy)}", highlight=False)


@retention_app.command()
def show(
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Only this workspace.")
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
) -> None:
    """The default policy, each workspace's own, and the archives made."""
    with AuditCore(Settings(event_store)) as audit:
        retention = Retention(audit)
        try:
            if workspace is not None:
                console.print(
                    f"{workspace}: {_describe(retention.policy(workspace))}", highlight=False
                )
            else:
                for policy in retention.policies():
                    name = "default" if policy.workspace_id == "*" else policy.workspace_id
                    console.print(f"{name}: {_describe(policy)}", highlight=False)
            archives = retention.archives(workspace)
        finally:
            retention.close()
    if archives:
        table = Table(title="Archives", title_justify="left")
        for column in ("workspace", "log positions", "events", "state", "archive"):
            table.add_column(column)
        for row in archives:
            table.add_row(
                row.workspace_id,
                f"{row.from_size}-{row.to_size - 1}",
                f"{row.to_size - row.from_size:,}",
                row.state,
                row.location,
            )
        console.print(table)


@retention_app.command()
def run(
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Only this workspace.")
    ] = None,
    archive_dir: ArchiveDirOption = None,
    batch_size: Annotated[
        int, typer.Option(min=1, max=100_000, help="Events deleted per transaction.")
    ] = 1_000,
    pause: Annotated[
        float, typer.Option(min=0, help="Seconds between deletion batches (room for writers).")
    ] = 0.0,
    every: Annotated[
        float | None,
        typer.Option(min=60, help="Run again every SECONDS until stopped (instead of cron)."),
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Archive, then prune, every workspace's events older than its policy."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with open_core(event_store, clickhouse) as audit:
        retention = Retention(audit, archive_dir)
        try:
            while True:
                with EventsProgress(errors) as progress:
                    advance = progress.track("pruning", None)
                    report = retention.run(
                        workspace_id=workspace,
                        batch_size=batch_size,
                        pause=pause,
                        progress=advance,
                    )
                for done in report.workspaces:
                    line = f"  {done.workspace_id}: {done.pruned:,} pruned"
                    if done.archives:
                        line += f", archived to {', '.join(done.archives)}"
                    if done.waiting_models:
                        line += (
                            f"; read models {', '.join(done.waiting_models)} have not reached "
                            "the range yet (their rows go on the next run)"
                        )
                    if done.note:
                        line += f" ({done.note})"
                    console.print(line, highlight=False, soft_wrap=True)
                if not report.workspaces:
                    console.print(
                        "No workspace's Merkle log holds events yet: only logged and signed "
                        "events are pruned (run the integrity follower with a signing key: "
                        "`auditcore integrity sign`, `serve` or `integrity follow`)."
                    )
                console.print(f"Pruned {report.pruned:,} events.")
                if every is None or stop.wait(every):
                    break
        finally:
            retention.close()


@archive_app.command("verify")
def verify_archive(
    path: Annotated[Path, typer.Argument(help="An archive (.jsonl.gz).")],
    public_key: PublicKeyOption = None,
) -> None:
    """Check an archive on its own (same as `auditcore verify --archive PATH`)."""
    check_archive_file(path, public_key or [])


def check_archive_file(path: Path, public_keys: list[Path]) -> None:
    keys = [
        read_verifier(key) for key in public_keys
    ] or IntegritySettings.from_env().trusted_keys()
    if not path.is_file():
        raise ConfigurationError(f"no archive at {path}")
    try:
        checked = check_archive(path, keys)
    except ArchiveError as error:
        console.print(f"[bold red]TAMPERED[/bold red] — {path}: {error}", highlight=False)
        raise typer.Exit(code=1) from None
    header = checked.header
    if not checked.signature_checked:
        errors.print(
            "[yellow]warning:[/yellow] no public key given: the checkpoint's signature was not "
            "checked (pass --public-key, or set AUDITCORE_PUBLIC_KEY or AUDITCORE_SIGNING_KEY)"
        )
    console.print(
        f"[green]OK[/green]: {checked.events:,} events, positions {header.from_size} to "
        f"{header.to_size - 1} of {checked.checkpoint.origin}, exactly as in its signed "
        f"checkpoint of size {checked.checkpoint.size}",
        highlight=False,
    )


@archive_app.command()
def restore(
    path: Annotated[Path, typer.Argument(help="An archive (.jsonl.gz).")],
    into: Annotated[
        str,
        typer.Option(
            "--into",
            help="The event store to restore into (a SQLite file or postgresql:// URL): not "
            "the live one the events were pruned from.",
        ),
    ],
    clickhouse: Annotated[
        str | None,
        typer.Option(
            "--clickhouse", help="ClickHouse to build the restored store's read models in."
        ),
    ] = None,
    public_key: PublicKeyOption = None,
) -> None:
    """Check an archive and bring its events back into a separate store for an
    investigation; with --clickhouse, build that store's read models."""
    keys = [read_verifier(key) for key in public_key or []] or (
        IntegritySettings.from_env().trusted_keys()
    )
    if not path.is_file():
        raise ConfigurationError(f"no archive at {path}")
    if into == os.environ.get("AUDITCORE_EVENT_STORE"):
        raise ConfigurationError(
            "--into names the live store (AUDITCORE_EVENT_STORE): restore into a separate one"
        )
    target = open_core(into, clickhouse) if clickhouse else AuditCore(Settings(into))
    with target:
        with EventsProgress(errors) as progress:
            report = restore_archive(path, target, keys, progress.track("restoring", None))
        console.print(
            f"Restored {report.restored:,} events of {report.workspace_id} (positions "
            f"{report.from_size} to {report.to_size - 1}) into {into}"
            + (f"; {report.already_there:,} were there already" if report.already_there else ""),
            highlight=False,
        )
        if clickhouse:
            target.migrate()
            target.project()
            console.print(f"Read models built in {clickhouse}.", highlight=False)
