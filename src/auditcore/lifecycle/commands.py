"""``auditcore retention …`` and ``auditcore archive …``: retention policies, pruning runs,
and archives from the shell."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
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
from auditcore.errors import ConfigurationError, one_line
from auditcore.facade import AuditCore
from auditcore.integrity.settings import IntegritySettings, read_verifier
from auditcore.lifecycle.archive import ArchiveError, check_archive
from auditcore.lifecycle.locations import ArchiveUnreachableError, fetched
from auditcore.lifecycle.restore import restore_archive
from auditcore.lifecycle.retention import (
    ARCHIVE_DIR_VARIABLE,
    ARCHIVE_FORMAT_VARIABLE,
    Policy,
    Retention,
    RunReport,
)
from auditcore.lifecycle.schedule import RetentionSchedule
from auditcore.progress import EventsProgress
from auditcore.store.settings import DEFAULT_EVENT_STORE, Settings

retention_app = typer.Typer(
    help="Retention: how long each workspace keeps its events; archive and prune older ones.",
    no_args_is_help=True,
)
archive_app = typer.Typer(help="Archives of pruned events: check them, restore them.")
ARCHIVE_HELP = "An archive (.jsonl.gz or .parquet): a path, or s3://bucket/key."

ArchiveDirOption = Annotated[
    str | None,
    typer.Option(
        "--archive-dir",
        envvar=ARCHIVE_DIR_VARIABLE,
        help="Directory, or s3://bucket/prefix (endpoint: AUDITCORE_S3_ENDPOINT), that "
        "archives are written to before events are pruned.",
    ),
]
ArchiveFormatOption = Annotated[
    str,
    typer.Option(
        "--archive-format",
        envvar=ARCHIVE_FORMAT_VARIABLE,
        help="jsonl (gzip-compressed JSON Lines) or parquet.",
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
    archive_format: ArchiveFormatOption = "jsonl",
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
    follow: Annotated[
        bool, typer.Option("--follow", help="Keep running: a pass every --every (3600) s.")
    ] = False,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Archive, then prune, every workspace's events older than its policy."""
    if follow and every is None:
        every = 3600.0
    stop = threading.Event()
    with open_core(event_store, clickhouse) as audit:
        retention = Retention(audit, archive_dir, archive_format)

        # SIGTERM: the pass stops between deletion batches; the next run resumes it.
        def stopped(*_: object) -> None:
            stop.set()
            retention.stopping.set()

        signal.signal(signal.SIGTERM, stopped)
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
                if report.busy:
                    console.print(
                        "Another process is running retention on this store: nothing done."
                    )
                elif not report.workspaces:
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
    path: Annotated[str, typer.Argument(help=ARCHIVE_HELP)],
    public_key: PublicKeyOption = None,
) -> None:
    """Check an archive on its own (same as `auditcore verify --archive PATH`)."""
    check_archive_file(path, public_key or [])


def check_archive_file(path: str, public_keys: list[Path]) -> None:
    """``verify --archive``: OK, or TAMPERED (exit 1); an archive that is not there, exit 2."""
    keys = [
        read_verifier(key) for key in public_keys
    ] or IntegritySettings.from_env().trusted_keys()
    try:
        with fetched(path) as local:
            checked = check_archive(local, keys)
    except ArchiveUnreachableError as error:
        raise ConfigurationError(str(error)) from None
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
    path: Annotated[str, typer.Argument(help=ARCHIVE_HELP)],
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
    if into == os.environ.get("AUDITCORE_EVENT_STORE"):
        raise ConfigurationError(
            "--into names the live store (AUDITCORE_EVENT_STORE): restore into a separate one"
        )
    target = open_core(into, clickhouse) if clickhouse else AuditCore(Settings(into))
    with target:
        try:
            with fetched(path) as local, EventsProgress(errors) as progress:
                report = restore_archive(local, target, keys, progress.track("restoring", None))
        except ArchiveUnreachableError as error:
            raise ConfigurationError(str(error)) from None
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


@contextlib.contextmanager
def scheduled_retention(
    audit: AuditCore, every: float | None, archive_dir: str | None, archive_format: str
) -> Iterator[RetentionSchedule | None]:
    """``serve``'s retention: a pass every ``every`` seconds in a background thread (``None``:
    off), stopped when the ``with`` ends. Without an archive location nothing can be pruned,
    so nothing is scheduled (and the operator is told)."""
    if every is None:
        console.print("retention: not run by this process (--no-retention)")
        yield None
        return
    if archive_dir is None:
        console.print(
            f"retention: not scheduled: no archive location (--archive-dir or "
            f"{ARCHIVE_DIR_VARIABLE}: a directory or s3://bucket/prefix)"
        )
        yield None
        return
    retention = Retention(audit, archive_dir, archive_format)

    def reported(report: RunReport) -> None:
        if report.busy:
            console.print("retention pass: another process is running retention; skipped")
            return
        archives = [a for w in report.workspaces for a in w.archives]
        console.print(
            f"retention pass: {report.pruned:,} events pruned"
            + (f", archived to {', '.join(archives)}" if archives else ""),
            highlight=False,
            soft_wrap=True,
        )

    def failed(error: Exception) -> None:
        errors.print(f"retention pass failed (the next one resumes): {one_line(error)}")

    schedule = RetentionSchedule(retention, every, on_report=reported, on_error=failed)
    console.print(
        f"retention: a pass every {every:g} s, archives to {retention.location_description}",
        highlight=False,
    )
    schedule.start()
    try:
        yield schedule
    finally:
        schedule.stop()
        retention.close()
