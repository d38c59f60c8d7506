"""``auditcore integrity …`` and ``auditcore verify``: the Merkle logs from the shell."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from auditcore.cli_options import EventStoreOption, cli_actor, console, errors
from auditcore.errors import ConfigurationError
from auditcore.facade import AuditCore
from auditcore.integrity.export import verifier_source
from auditcore.integrity.note import NoteError, SignerKey, check_key_name
from auditcore.integrity.settings import (
    CHECKPOINT_DIR_VARIABLE,
    PUBLIC_KEY_VARIABLE,
    SIGNING_KEY_VARIABLE,
    IntegritySettings,
    read_signer,
    read_verifier,
)
from auditcore.integrity.verify import OutsideCheckpoint, VerifyReport
from auditcore.progress import EventsProgress
from auditcore.readmodel.export import ExportFormat, record_export
from auditcore.readmodel.queries import EventQuery
from auditcore.render import OutputFormat
from auditcore.store.settings import DEFAULT_EVENT_STORE, Settings

integrity_app = typer.Typer(
    help="Tamper evidence: the per-workspace Merkle logs, signing keys and checkpoints.",
    no_args_is_help=True,
)

SigningKeyOption = Annotated[
    Path | None,
    typer.Option(
        "--signing-key",
        envvar=SIGNING_KEY_VARIABLE,
        help="Private key file that signs checkpoints (auditcore integrity keygen).",
    ),
]
CheckpointDirOption = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint-dir",
        envvar=CHECKPOINT_DIR_VARIABLE,
        help="Directory that signed checkpoints are also written to.",
    ),
]


@contextmanager
def _core(
    event_store: str, signing_key: Path | None = None, checkpoint_dir: Path | None = None
) -> Iterator[AuditCore]:
    settings = replace(
        IntegritySettings.from_env(),
        signing_key=signing_key,
        checkpoint_dir=checkpoint_dir,
    )
    with AuditCore(Settings(event_store), integrity=settings) as audit:
        yield audit


@integrity_app.command()
def keygen(
    name: Annotated[
        str,
        typer.Option(
            help="The log's name: workspace W's checkpoints are signed as NAME/W. A "
            "schema-less URL of yours is best, e.g. audit.example.com."
        ),
    ] = "auditcore",
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Private key file to write (NAME.pub beside).")
    ] = Path("auditcore-signing.key"),
) -> None:
    """Make an Ed25519 key pair for signing checkpoints; print the public (verifier) key."""
    try:
        check_key_name(name)
    except NoteError as error:
        raise typer.BadParameter(str(error), param_hint="--name") from None
    if out.exists():
        raise typer.BadParameter(f"{out} exists; keep it, or choose another path", param_hint="-o")
    key = SignerKey.generate(name)
    out.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(key.encode() + "\n")
    public = out.with_suffix(".pub")
    public.write_text(key.verifier().encode() + "\n", encoding="utf-8")
    console.print(f"Private key written to {out} (mode 600): set {SIGNING_KEY_VARIABLE}={out}")
    console.print(f"Public key written to {public}; publish it where auditors can get it:")
    console.out(key.verifier().encode(), highlight=False)


@integrity_app.command("public-key")
def public_key(
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", "-w", help="The key as named for this workspace's log."),
    ] = None,
    signing_key: SigningKeyOption = None,
) -> None:
    """Print the verifier key of the configured signing key (for one workspace's log: -w)."""
    if signing_key is None:
        raise ConfigurationError(
            f"no signing key: give --signing-key or set {SIGNING_KEY_VARIABLE}"
        )
    key = read_signer(signing_key).verifier()
    console.out((key.for_log(workspace) if workspace else key).encode(), highlight=False)


@integrity_app.command()
def verifier(
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Where to write it (default: stdout).")
    ] = None,
) -> None:
    """Write the standalone offline verifier of proof exports (needs only `cryptography`)."""
    source = verifier_source()
    if out is None:
        console.out(source, highlight=False, end="")
        return
    out.write_text(source, encoding="utf-8")
    errors.print(f"Wrote {out}: python {out} --public-key KEY.pub EXPORT.proof.json")


@integrity_app.command()
def follow(
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    signing_key: SigningKeyOption = None,
    checkpoint_dir: CheckpointDirOption = None,
) -> None:
    """Keep the Merkle logs up with the store and sign checkpoints, until Ctrl-C. (`serve` and
    `project --follow` run this follower too.)"""
    with _core(event_store, signing_key, checkpoint_dir) as audit:
        integrity = audit.integrity
        if integrity.settings.signing_key is None:
            errors.print(
                f"[yellow]no signing key ({SIGNING_KEY_VARIABLE}): logs are kept, but no "
                "checkpoint is signed[/yellow]"
            )
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        threads = integrity.follow(stop)
        console.print("Following the event store; Ctrl-C to stop.")
        try:
            with Live(console=console, refresh_per_second=1) as live:
                while not stop.wait(1.0):
                    live.update(_status_table(audit))
        except KeyboardInterrupt:
            stop.set()
        for thread in threads:
            thread.join(timeout=30)


@integrity_app.command()
def sign(
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    signing_key: SigningKeyOption = None,
    checkpoint_dir: CheckpointDirOption = None,
) -> None:
    """Catch the logs up and sign a checkpoint of every workspace whose log grew, now."""
    if signing_key is None:
        raise ConfigurationError(
            f"no signing key: give --signing-key or set {SIGNING_KEY_VARIABLE}"
        )
    with _core(event_store, signing_key, checkpoint_dir) as audit:
        head = audit.app.recorder.max_notification_id() or 0
        with EventsProgress(errors) as progress:
            advance = progress.track("logging", max(head - audit.integrity.log.position(), 0))
            made = audit.integrity.sign_now(advance)
    for checkpoint in made:
        console.print(f"  ✓ {checkpoint.workspace_id}: size {checkpoint.size:,}")
    console.print(f"Signed {len(made)} checkpoint(s).")


@integrity_app.command()
def status(event_store: EventStoreOption = DEFAULT_EVENT_STORE) -> None:
    """Each workspace's log: its size, its latest checkpoint, and the follower's lag."""
    with _core(event_store) as audit:
        console.print(_status_table(audit))


def _status_table(audit: AuditCore) -> Table:
    log = audit.integrity.log
    head = audit.app.recorder.max_notification_id() or 0
    position = log.position()
    latest = log.latest_checkpoints()
    table = Table(
        title=f"Merkle logs (follower at store position {position:,} of {head:,}; "
        f"lag {max(head - position, 0):,})",
        title_justify="left",
    )
    for column in ("workspace", "leaves", "signed size", "signed at (UTC)", "not yet signed"):
        table.add_column(column, justify="left" if column == "workspace" else "right")
    for workspace, tree in log.heads().items():
        checkpoint = latest.get(workspace)
        signed = checkpoint.size if checkpoint else 0
        when = (
            datetime.fromtimestamp(checkpoint.signed_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
            if checkpoint
            else "never"
        )
        unsigned = tree.size - signed
        table.add_row(
            workspace,
            f"{tree.size:,}",
            f"{signed:,}",
            when,
            f"[yellow]{unsigned:,}[/yellow]" if unsigned else "[green]0[/green]",
        )
    return table


def verify(
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Only this workspace's log.")
    ] = None,
    checkpoint: Annotated[
        list[Path] | None,
        typer.Option(
            "--checkpoint",
            help="A signed checkpoint from outside the database (e.g. published): the store "
            "must still hold everything it covers. Repeatable.",
        ),
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help=f"Verifier key file to trust (repeat for rotated keys), besides those in "
            f"{PUBLIC_KEY_VARIABLE} (paths separated by ':') and the signing key's own.",
        ),
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    output: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json.")
    ] = OutputFormat.TABLE,
    archive: Annotated[
        str | None,
        typer.Option(
            "--archive",
            help="Check this retention archive (a path, or s3://bucket/key) on its own instead.",
        ),
    ] = None,
) -> None:
    """Recompute every leaf from the store, rebuild the Merkle trees and check them against
    the stored logs and every signed checkpoint (stored, published, and given with
    --checkpoint), and every retention archive against the leaves it replaced. Exit status 0
    if everything matches, 1 at the first divergence."""
    # Imported here: the lifecycle builds on this module's layer.
    from auditcore.lifecycle.commands import check_archive_file  # noqa: PLC0415
    from auditcore.lifecycle.retention import Retention  # noqa: PLC0415

    if archive is not None:
        check_archive_file(archive, public_key or [])
        return
    keys = [read_verifier(path) for path in public_key or []]
    outside = []
    for path in checkpoint or []:
        try:
            outside.append(OutsideCheckpoint(str(path), path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigurationError(f"cannot read the checkpoint {path}: {error}") from error
    with AuditCore(Settings(event_store), integrity=IntegritySettings.from_env()) as audit:
        head = audit.app.recorder.max_notification_id() or 0
        with EventsProgress(errors) as progress:
            advance = progress.track("verifying", head)
            retention = Retention(audit)
            try:
                report = audit.integrity.verify(
                    workspace_id=workspace,
                    keys=keys,
                    outside=outside,
                    progress=advance,
                    pruned=retention.pruned_ranges(),
                )
                retention.check_archives(report, audit.integrity.trusted_keys(keys))
            finally:
                retention.close()
    if output is OutputFormat.TABLE:
        _print_report(report)
    else:
        console.out(json.dumps(_report_json(report), indent=2), highlight=False)
    if not report.ok:
        raise typer.Exit(code=1)


def write_proof_export(
    audit: AuditCore, workspace: str, out: Path, from_size: int, to_size: int | None
) -> None:
    """``export --proof``: OUT (the events), OUT's .checkpoint and .proof.json beside it."""
    integrity = audit.integrity
    bundle = integrity.export(workspace, from_size, to_size)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigurationError(f"cannot create {out.parent}: {error.strerror}") from error
    record_export(
        audit,
        workspace,
        EventQuery(),
        ExportFormat.JSONL,
        actor=cli_actor(),
        source="cli",
        proof_range=(bundle.from_size, bundle.to_size),
    )
    checkpoint_file, proof_file = out.with_suffix(".checkpoint"), out.with_suffix(".proof.json")
    with out.open("wb") as file, EventsProgress(errors) as progress:
        advance = progress.track("exporting", bundle.to_size - bundle.from_size)
        for chunk in bundle.lines():
            file.write(chunk)
            advance(chunk.count(b"\n"))
    checkpoint_file.write_text(bundle.checkpoint.note, encoding="utf-8")
    document = bundle.document(out.name, integrity.log_key)
    proof_file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    errors.print(
        f"Exported positions {bundle.from_size} to {bundle.to_size - 1} of {workspace}'s log "
        f"to {out}, with {checkpoint_file.name} and {proof_file.name}. Check it with: "
        f"python verify_export.py --public-key LOG.pub {proof_file} "
        "(auditcore integrity verifier -o verify_export.py)"
    )


def _print_report(report: VerifyReport) -> None:
    table = Table(title=f"Verified {report.events:,} stored events", title_justify="left")
    columns = (
        "workspace",
        "leaves",
        "verified",
        "pruned",
        "checkpoints",
        "latest signed",
        "pending",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "workspace" else "right")
    for workspace, count in sorted(report.workspaces.items()):
        table.add_row(
            workspace,
            f"{count.leaves:,}",
            f"{count.verified:,}",
            f"{count.pruned:,}",
            f"{count.checkpoints:,}",
            f"{count.latest_checkpoint:,}"
            + (f" ({count.latest_signed_at:%Y-%m-%d %H:%M})" if count.latest_signed_at else ""),
            f"{count.pending:,}",
        )
    console.print(table)
    for warning in report.warnings:
        errors.print(f"[yellow]warning:[/yellow] {warning}", highlight=False)
    if report.ok:
        console.print("[green]OK[/green]: every event matches its log and every checkpoint.")
        return
    first, *rest = report.problems
    # One line per problem, unwrapped, so logs can be searched for them.
    console.print(
        f"[bold red]TAMPERED[/bold red] — first divergence: {first.describe()}",
        soft_wrap=True,
        highlight=False,
    )
    for problem in rest[:19]:
        console.print(f"  also: {problem.describe()}", soft_wrap=True, highlight=False)
    more = len(rest) - 19 + report.more_problems
    if more > 0:
        console.print(f"  … and {more:,} more (use --format json for all)")


def _report_json(report: VerifyReport) -> dict[str, object]:
    return {
        "ok": report.ok,
        "events": report.events,
        "follower_position": report.follower_position,
        "workspaces": {
            workspace: {
                "leaves": count.leaves,
                "verified": count.verified,
                "pruned": count.pruned,
                "checkpoints": count.checkpoints,
                "latest_checkpoint": count.latest_checkpoint,
                "latest_signed_at": count.latest_signed_at.isoformat()
                if count.latest_signed_at
                else None,
                "pending": count.pending,
            }
            for workspace, count in sorted(report.workspaces.items())
        },
        "problems": [
            {
                "kind": p.kind,
                "workspace_id": p.workspace_id,
                "position": p.index,
                "event_id": p.event_id,
                "store_position": p.store_position,
                "detail": p.detail,
            }
            for p in report.problems
        ],
        "more_problems": report.more_problems,
        "warnings": report.warnings,
    }
