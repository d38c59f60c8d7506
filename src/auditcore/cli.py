"""The ``auditcore`` command line: a thin layer over ``AuditCore`` and its read API."""

from __future__ import annotations

import json
import signal
import sys
import threading
from contextlib import ExitStack
from dataclasses import asdict
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from auditcore.api.serve import serve
from auditcore.cli_actions import ActionsOption, actions_app, load_actions
from auditcore.cli_options import (
    ClickHouseOption,
    ClusterOption,
    EventStoreOption,
    FormatOption,
    FromStoreOption,
    MomentOption,
    RecordedOption,
    WorkspaceOption,
    cli_actor,
    console,
    errors,
    known_workspace,
    open_core,
    parse_moment_option,
    typed_command,
)
from auditcore.cli_owner import ANSWERING, command_handler
from auditcore.clickhouse.connection import DEFAULT_CLICKHOUSE
from auditcore.clickhouse.owner import own_engine
from auditcore.domain import AuditedAggregate, Incident, Monitor
from auditcore.errors import AuditcoreError, CatchUpFailedError, one_line
from auditcore.events.envelope import Actor, ActorType, Target
from auditcore.events.provenance import Provenance
from auditcore.facade import AuditCore
from auditcore.integrity.commands import integrity_app, verify, write_proof_export
from auditcore.lifecycle.commands import archive_app, retention_app
from auditcore.lifecycle.erasure_commands import erase, new_master, rotate_master
from auditcore.progress import EventsProgress
from auditcore.projection.deadletters import DeadLetter, LetterStatus
from auditcore.projection.runner import ProcessorStatus
from auditcore.readmodel.export import ExportFormat, export_chunks, record_export
from auditcore.readmodel.queries import EventQuery
from auditcore.render import (
    OutputFormat,
    dispatcher_table,
    dispatchers_table,
    print_events,
    stats_table,
)
from auditcore.store.dispatcher import DispatchHandle
from auditcore.store.settings import (
    DEFAULT_EVENT_STORE,
)
from auditcore.streams.commands import streams_app
from auditcore.tenancy.commands import keys_app, workspaces_app

app = typer.Typer(
    help="Record audit events, project them into ClickHouse, and ask who did what, when.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
projections_app = typer.Typer(
    help="Inspect the read models and rebuild them from the event store.", no_args_is_help=True
)
app.add_typer(projections_app, name="projections")
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(keys_app, name="keys")
app.add_typer(integrity_app, name="integrity")
app.add_typer(actions_app, name="actions")
app.add_typer(retention_app, name="retention")
app.add_typer(archive_app, name="archive")
app.add_typer(streams_app, name="streams")
app.command()(serve)
app.command()(verify)
app.command()(erase)
keys_app.command("new-master")(new_master)
keys_app.command("rotate-master")(rotate_master)


def _project_with_progress(audit: AuditCore) -> dict[str, int]:
    audit.migrate()
    statuses = audit.projections.status(audit.clickhouse)
    with EventsProgress(console) as progress:
        bars = {s.name: progress.track(s.name, max(s.head - s.position, 0)) for s in statuses}
        return audit.project(lambda name, count: bars[name](count))


@app.command()
def demo(
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    workspace: WorkspaceOption = "acme",
) -> None:
    """Record a realistic afternoon of incident and monitor activity, project it into
    ClickHouse and answer a few questions from the read model."""
    from auditcore.demo import ALICE, INCIDENT_TITLE, run_demo  # noqa: PLC0415 - demo only

    with open_core(event_store, clickhouse) as audit:
        run = run_demo(audit, workspace)
        if run.recorded_before:
            console.print(
                f"The demo's story is already in workspace {workspace!r} (recorded "
                f"{run.recorded_before:%Y-%m-%d %H:%M} UTC): nothing recorded again."
            )
        else:
            console.print(
                f"Recorded {len(run.events)} events in {audit.settings.describe_event_store()}."
            )
            console.print("[bold]Refused by the domain rules (nothing recorded):[/bold]")
            for refusal in run.refused:
                console.print(f"  • {refusal}")
        console.print(f"\nProjecting into {audit.settings.clickhouse_target.describe()}:")
        _project_with_progress(audit)
        reader = audit.reader(workspace)
        console.print()
        print_events(
            console,
            reader.history(run.incident_id),
            OutputFormat.TABLE,
            f"Q1. What happened to incident {INCIDENT_TITLE!r}?",
        )
        recent = reader.events(EventQuery(filters={"actor_id": [ALICE.id]}, limit=5))
        print_events(
            console,
            recent.items,
            OutputFormat.TABLE,
            f"Q2. What did {ALICE.name} do most recently?",
        )
        console.print(
            stats_table(
                reader.stats(group_by="action", interval="hour", since=run.since),
                "Q3. Activity per hour, by action",
            )
        )
        command = typed_command()
        console.print(
            f"\nTry: [bold]{command} query -w {workspace} --action-prefix incident. "
            f"--limit 5[/bold]  or  [bold]{command} stats -w {workspace} --group-by actor[/bold]",
            highlight=False,
        )


@app.command()
def migrate(
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    cluster: ClusterOption = None,
) -> None:
    """Create the event store's tables and every read model's ClickHouse table."""
    with open_core(event_store, clickhouse, cluster) as audit:
        for table in audit.migrate():
            console.print(f"  ✓ {table}")
        console.print(
            f"Schema ready in {audit.settings.clickhouse_target.describe()} and "
            f"{audit.settings.describe_event_store()}."
        )


@app.command()
def project(
    follow: Annotated[bool, typer.Option("--follow", help="Keep following new events.")] = False,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    cluster: ClusterOption = None,
) -> None:
    """Bring every read model up to date with the event store, then exit (or --follow: keep
    following, whatever fails meanwhile; each read model retries on its own)."""
    with open_core(event_store, clickhouse, cluster) as audit, ExitStack() as owning:
        if follow:  # other commands reach the embedded engine through this process meanwhile
            owning.enter_context(
                own_engine(
                    audit.settings.clickhouse_target,
                    lambda: audit.clickhouse,
                    "project --follow",
                    command_handler(audit),
                )
            )
        failed: dict[str, str] = {}
        try:
            done = _project_with_progress(audit)
        except CatchUpFailedError as failure:
            done, failed = failure.done, failure.failed
        except Exception as away:  # e.g. ClickHouse away: a follower waits for it to return
            if not follow:
                raise
            errors.print(f"catch-up failed: {one_line(away)}; following anyway", highlight=False)
            done = {}
        # A failed read model is named below, not counted as caught up.
        console.print(
            caught_up({name: n for name, n in done.items() if name not in failed}),
            highlight=False,
        )
        for name, holder in audit.projections.elsewhere.items():
            console.print(
                f"  {name}: another process follows it ({holder}); left to it"
                + (", standing by." if follow else "."),
                highlight=False,
            )
        for name, error in failed.items():
            errors.print(f"[red]✗ {name} failed:[/red] {error}", highlight=False)
        if failed:
            errors.print(
                f"{len(failed)} of {len(done)} read models failed (the others are up to date); "
                "`auditcore projections status` shows where each one is.",
                highlight=False,
            )
        if not follow:
            if failed:
                raise typer.Exit(code=1)
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        threads = audit.projections.follow(stop) + audit.integrity.follow(stop)
        console.print("Following new events; Ctrl-C to stop.")
        try:
            with Live(console=console, refresh_per_second=1) as live:
                while not stop.wait(1.0):
                    live.update(_follow_status(audit))
        except KeyboardInterrupt:
            stop.set()
        for thread in threads:
            thread.join(timeout=10)


def caught_up(done: dict[str, int]) -> str:
    """What a catch-up did, per read model (each reads the same events: never their sum)."""
    counts = set(done.values())
    if len(counts) == 1:
        count = counts.pop()
        noun = "read model" if len(done) == 1 else f"each of {len(done)} read models"
        return f"Caught up: {count:,} new events projected into {noun}."
    if not done:
        return "Caught up: no read model projected here."
    each = ", ".join(f"{name} {count:,}" for name, count in sorted(done.items()))
    return f"Caught up; new events projected per read model: {each}."


def _follow_status(audit: AuditCore) -> Group | str:
    """The read models' status, or why it cannot be read now (the followers keep retrying)."""
    try:
        return status_table(audit.projections.status(audit.clickhouse))
    except Exception as error:
        return f"status unavailable ({one_line(error)}); the read models keep retrying"


@app.command()
def status(
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Every process dispatching into this event store, as it last reported (every 5 s by
    default): queue depth, events accepted, written and failed, batches, latencies. A running
    dispatcher that misses three reports is flagged silent. Read models: `projections status`.
    """
    from auditcore.store.heartbeats import Heartbeats  # noqa: PLC0415 - SQLAlchemy

    with open_core(event_store) as audit:
        head = audit.app.recorder.max_notification_id() or 0
        heartbeats = Heartbeats(audit.settings)
        try:
            reports = heartbeats.reports()
        finally:
            heartbeats.close()
    if output is OutputFormat.TABLE:
        console.print(dispatchers_table(reports, head, datetime.now(UTC)))
        return
    console.out(
        json.dumps(
            {
                "head": head,
                "dispatchers": [
                    {
                        "process": report.process,
                        "host": report.host,
                        "pid": report.pid,
                        "started_at": report.started_at.isoformat(),
                        "reported_at": report.reported_at.isoformat(),
                        "running": report.running,
                        **asdict(report.stats),
                    }
                    for report in reports
                ],
            },
            indent=2,
        ),
        highlight=False,
    )


@projections_app.command("status")
def projections_status(
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Each read model's position, the store's head, and the lag between them."""
    with open_core(event_store, clickhouse) as audit:
        audit.migrate()
        statuses = audit.projections.status(audit.clickhouse)
        if output is OutputFormat.TABLE:
            console.print(status_table(statuses))
        else:
            console.out(
                json.dumps(
                    [
                        {
                            "name": s.name,
                            "table": s.table,
                            "state": s.state,
                            "position": s.position,
                            "head": s.head,
                            "lag": s.lag,
                            "behind_seconds": round(s.behind_seconds, 3),
                            "dead_letters": s.dead_letters,
                            "definition_current": s.fingerprint_matches,
                            "updated_at": s.updated_at.isoformat() if s.updated_at else None,
                            "error": s.last_error,
                            "followed_by": s.followed_by,
                        }
                        for s in statuses
                    ],
                    indent=2,
                ),
                highlight=False,
            )


@projections_app.command("rebuild")
def projections_rebuild(
    name: Annotated[str, typer.Argument(help="The read model, e.g. audit_events.")],
    keep_old: Annotated[
        bool, typer.Option("--keep-old", help="Keep the replaced table as NAME__old_<time>.")
    ] = False,
    stream: Annotated[
        UUID | None, typer.Option("--stream", help="Only re-project this stream's rows.")
    ] = None,
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Only re-project this workspace.")
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    cluster: ClusterOption = None,
) -> None:
    """Build a read model anew beside the live one from the whole log, then swap it in.

    Readers keep querying the live table throughout and never see a partial one. Interrupted
    (Ctrl-C, kill), it leaves the live table untouched; run it again to resume. With
    --stream or --workspace, only that part's rows are replaced, in place.
    """
    with open_core(event_store, clickhouse, cluster) as audit:
        if stream or workspace:
            count = audit.rebuild_part(name, stream_id=stream, workspace_id=workspace)
            console.print(f"Re-projected {count:,} events of {stream or workspace} into {name}.")
            return
        model = audit.read_models.get(name)
        head = audit.app.recorder.max_notification_id() or 0
        with EventsProgress(console) as progress:
            advance = progress.track(f"rebuilding {model.name}", head)
            result = audit.rebuild(name, keep_old=keep_old, progress=advance)
        resumed = f", resumed at position {result.resumed_from:,}" if result.resumed_from else ""
        kept = f"; the old table is kept as {result.kept_old_as}" if result.kept_old_as else ""
        console.print(
            f"Rebuilt {name}: {result.events:,} events projected{resumed}, swapped in "
            f"at position {result.position:,}{kept}."
        )


_NUMBERS = ("position", "store head", "lag", "dead letters")
_STATE_COLOURS = {"ok": "green", "degraded": "yellow", "stalled": "red", "failing": "red"}


class LetterChoice(StrEnum):
    PARKED = "parked"
    RETRIED = "retried"
    SKIPPED = "skipped"
    ALL = "all"

    @property
    def letter_status(self) -> LetterStatus | None:
        return None if self is LetterChoice.ALL else LetterStatus(self.value)


def status_table(statuses: list[ProcessorStatus]) -> Group:
    table = Table(title="Read models", title_justify="left")
    for column in (
        "read model", "table", "state", "position", "store head", "lag", "dead letters",
        "updated (UTC)", "note",
    ):  # fmt: skip
        table.add_column(column, justify="right" if column in _NUMBERS else "left")
    for s in statuses:
        note = s.last_error or ("" if s.fingerprint_matches else "definition changed: rebuild")
        if not note and s.stalled:
            note = f"no progress, events waiting {s.behind_seconds:,.0f}s: is a follower running?"
        if not note and s.dead_letters:
            note = "events parked: auditcore projections dead-letters"
        if s.followed_elsewhere:
            note = f"another process follows it ({s.followed_by})" + (f"; {note}" if note else "")
        table.add_row(
            s.name,
            s.table,
            f"[{_STATE_COLOURS[s.state]}]{s.state}[/{_STATE_COLOURS[s.state]}]",
            f"{s.position:,}",
            f"{s.head:,}",
            f"[green]{s.lag:,}[/green]" if s.lag == 0 else f"[yellow]{s.lag:,}[/yellow]",
            f"{s.dead_letters:,}",
            s.updated_at.strftime("%Y-%m-%d %H:%M:%S") if s.updated_at else "never",
            f"[red]{note}[/red]" if s.state in ("failing", "stalled") else note,
        )
    return Group(table)


@projections_app.command("dead-letters")
def projections_dead_letters(
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Only this read model; repeatable.")
    ] = None,
    position: Annotated[
        list[int] | None, typer.Option("--position", help="Only this position; repeatable.")
    ] = None,
    retry: Annotated[
        bool,
        typer.Option(
            "--retry",
            help="Project the parked events again (their streams; a roll-up is rebuilt whole).",
        ),
    ] = False,
    skip: Annotated[
        bool, typer.Option("--skip", help="Leave them out for good (the letters stay, skipped).")
    ] = False,
    status: Annotated[
        LetterChoice, typer.Option("--status", help="Which letters to list.")
    ] = LetterChoice.PARKED,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Events a read model parked because it cannot hold them (everything else is in): list
    them, or --retry or --skip the parked ones."""
    if retry and skip:
        raise typer.BadParameter("give --retry or --skip, not both", param_hint="--retry")
    if (retry or skip) and status is not LetterChoice.PARKED:
        raise typer.BadParameter(
            "only parked letters are retried or skipped", param_hint="--status"
        )
    with open_core(event_store, clickhouse) as audit:
        audit.migrate()
        runner, client = audit.projections, audit.clickhouse
        letters = runner.dead_letters(client, model, status=status.letter_status)
        if position:
            letters = [letter for letter in letters if letter.position in position]
        if retry:
            still = runner.retry_dead_letters(client, letters)
            console.print(
                f"Retried {len(letters):,} parked events: {len(letters) - len(still):,} are "
                f"in now, {len(still):,} still refused."
            )
            if still:
                console.print(dead_letters_table(still))
                raise typer.Exit(code=1)
            return
        if skip:
            runner.skip_dead_letters(client, letters)
            console.print(f"Skipped {len(letters):,} parked events (their letters are kept).")
            return
    if output is OutputFormat.TABLE:
        console.print(dead_letters_table(letters))
        return
    console.out(
        json.dumps(
            [{**asdict(letter), "failed_at": letter.failed_at.isoformat()} for letter in letters],
            indent=2,
            default=str,
        ),
        highlight=False,
    )


def dead_letters_table(letters: list[DeadLetter]) -> Table:
    table = Table(title=f"Dead letters ({len(letters):,})", title_justify="left")
    for column in ("read model", "position", "event id", "workspace", "action", "status"):
        table.add_column(column, justify="right" if column == "position" else "left")
    table.add_column("failed (UTC)")
    table.add_column("error", overflow="fold")
    for letter in letters:
        table.add_row(
            letter.model,
            f"{letter.position:,}",
            letter.event_id,
            letter.workspace_id,
            letter.action,
            letter.status.value,
            letter.failed_at.strftime("%Y-%m-%d %H:%M:%S"),
            letter.error,
        )
    return table


@app.command()
def record(
    action: Annotated[str, typer.Argument(help="Dotted action name, e.g. member.invited.")],
    workspace: WorkspaceOption,
    actor_id: Annotated[str, typer.Option("--actor", help="Who did it.")] = "system",
    actor_type: Annotated[ActorType, typer.Option(help="Kind of actor.")] = ActorType.SYSTEM,
    actor_name: Annotated[str | None, typer.Option(help="Actor's display name.")] = None,
    targets: Annotated[
        list[str] | None, typer.Option("--target", "-t", help="TYPE:ID[:NAME]; repeatable.")
    ] = None,
    metadata: Annotated[
        str, typer.Option("--metadata", "-m", help="Metadata as a JSON object.")
    ] = "{}",
    source: Annotated[str, typer.Option(help="Where it came from.")] = "cli",
    event_id: Annotated[
        UUID | None, typer.Option(help="Idempotency key: re-sending records nothing new.")
    ] = None,
    modules: ActionsOption = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Record one standalone event (in the event store; `project` makes it queryable).

    The action is one registered in Python (built in, or by --actions) or as JSON Schema
    (`auditcore actions register`)."""
    load_actions(modules)
    try:
        parsed_metadata: Any = json.loads(metadata)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not valid JSON: {error}", param_hint="--metadata") from None
    with open_core(event_store) as audit:
        provenance: Provenance = {
            "actor": Actor(id=actor_id, type=actor_type, name=actor_name),
            "targets": [_parse_target(text) for text in targets or []],
            "source": source,
        }
        if event_id:
            provenance["event_id"] = event_id
        event = audit.record(action, workspace_id=workspace, metadata=parsed_metadata, **provenance)
        print_events(console, [event], output)


@app.command("import")
def import_events(
    path: Annotated[
        typer.FileText, typer.Argument(help="JSON Lines: one event per line, as record() takes it.")
    ],
    modules: ActionsOption = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
) -> None:
    """Dispatch every event of a JSON Lines file in batches, then show the dispatcher's stats.

    Each line is an object with record()'s fields: action, workspace_id, and optionally actor,
    targets, metadata, source, context, event_id (an idempotency key) and occurred_at. A bad
    line is reported with its number and skipped; lines with an event_id already stored are not
    stored twice.
    """
    load_actions(modules)
    problems: list[tuple[int, str]] = []
    with open_core(event_store) as audit, EventsProgress(console) as progress:
        advance = progress.track("dispatching", None)
        waiting: list[tuple[int, DispatchHandle]] = []
        for number, line in enumerate(path, start=1):
            if not line.strip():
                continue
            try:
                waiting.append((number, audit.dispatch(**_draft(line))))
            except (ValueError, TypeError, AuditcoreError) as error:
                problems.append((number, str(error)))
            advance(1)
            if number % _SETTLE_EVERY == 0:
                waiting = _unsettled(waiting, problems)
        audit.flush()
        _unsettled(waiting, problems)
        stats = audit.stats()
    console.print(dispatcher_table(stats))
    for number, problem in sorted(problems)[:20]:
        errors.print(f"[yellow]skipped[/yellow] line {number}: {problem}", highlight=False)
    if problems:
        errors.print(f"{len(problems)} line(s) skipped", highlight=False)
        raise typer.Exit(code=2)


_SETTLE_EVERY = 10_000
"""Lines between sweeps of the import's handles: each keeps its event, so a long file must not
keep them all; unsettled ones are at most what the dispatcher buffers."""


def _unsettled(
    waiting: list[tuple[int, DispatchHandle]], problems: list[tuple[int, str]]
) -> list[tuple[int, DispatchHandle]]:
    """The handles not settled yet; the failed ones are added to ``problems``."""
    problems += [
        (number, str(handle.exception()))
        for number, handle in waiting
        if handle.done() and handle.exception() is not None
    ]
    return [(number, handle) for number, handle in waiting if not handle.done()]


@app.command()
def history(
    stream_id: Annotated[UUID, typer.Argument(help="The stream (aggregate) id.")],
    workspace: WorkspaceOption,
    from_store: FromStoreOption = False,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            parser=parse_moment_option,
            metavar="TIME",
            help="As the store had it then (replayed from the store), with the state it built.",
        ),
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Show a stream's full history, in version order (or as it was at --as-of)."""
    with open_core(event_store, clickhouse) as audit:
        if from_store or as_of:
            events = audit.history(stream_id, workspace_id=workspace, as_of=as_of)
        else:
            events = audit.reader(workspace).history(stream_id)
        print_events(console, events, output)
        kind = AGGREGATES.get(events[0].action)
        if as_of and kind and output is OutputFormat.TABLE:
            aggregate = kind.project(None, events)
            table = Table(
                title=f"{kind.__name__} as of {as_of:%Y-%m-%d %H:%M:%S} UTC", title_justify="left"
            )
            table.add_column("field")
            table.add_column("value")
            for field, value in vars(aggregate).items():
                if not field.startswith("_"):
                    table.add_row(field, str(value))
            console.print(table)


@app.command()
def get(
    event_id: Annotated[UUID, typer.Argument(help="The event id.")],
    workspace: WorkspaceOption,
    from_store: FromStoreOption = False,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    output: FormatOption = OutputFormat.JSON,
) -> None:
    """Show one event by its id."""
    with open_core(event_store, clickhouse) as audit:
        if from_store:
            event = audit.event(event_id, workspace_id=workspace)
        else:
            event = audit.reader(workspace).get(event_id)
        print_events(console, [event], output)


@app.command()
def query(
    workspace: WorkspaceOption,
    action: Annotated[list[str] | None, typer.Option(help="Exact action; repeatable.")] = None,
    action_prefix: Annotated[str | None, typer.Option(help="Action prefix, e.g. incident.")] = None,
    actor: Annotated[list[str] | None, typer.Option(help="Actor id; repeatable.")] = None,
    actor_type: Annotated[ActorType | None, typer.Option(help="Kind of actor.")] = None,
    target: Annotated[list[str] | None, typer.Option(help="TYPE:ID; repeatable.")] = None,
    target_type: Annotated[str | None, typer.Option(help="Any target of this type.")] = None,
    target_id: Annotated[str | None, typer.Option(help="Any target with this id.")] = None,
    source: Annotated[list[str] | None, typer.Option(help="Source; repeatable.")] = None,
    stream: Annotated[UUID | None, typer.Option(help="Stream id.")] = None,
    api_key: Annotated[
        list[str] | None,
        typer.Option("--api-key", help="Written through the API by this key id; repeatable."),
    ] = None,
    since: Annotated[datetime | None, MomentOption] = None,
    until: Annotated[datetime | None, MomentOption] = None,
    recorded_since: Annotated[datetime | None, RecordedOption] = None,
    recorded_until: Annotated[datetime | None, RecordedOption] = None,
    text: Annotated[str | None, typer.Option(help="Free text; every word must appear.")] = None,
    limit: Annotated[int, typer.Option(help="Events per page (1-1000).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor from the previous page.")] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Find events, newest first, a page at a time."""
    filters = {
        "action": action or [],
        "action_prefix": [action_prefix] if action_prefix else [],
        "actor_id": actor or [],
        "actor_type": [actor_type.value] if actor_type else [],
        "target": target or [],
        "target_type": [target_type] if target_type else [],
        "target_id": [target_id] if target_id else [],
        "source": source or [],
        "stream_id": [str(stream)] if stream else [],
        "api_key_id": api_key or [],
    }
    request = EventQuery(
        {k: v for k, v in filters.items() if v},
        since,
        until,
        text,
        limit,
        cursor,
        recorded_since=recorded_since,
        recorded_until=recorded_until,
    )
    answering = ANSWERING.get()
    if answering is not None:  # in the owner, for a client's command line (cli_owner)
        answer_query(answering[0], workspace, request, output, answering[1], answering[2])
        return
    with open_core(event_store, clickhouse) as audit:
        answer_query(audit, workspace, request, output, console, errors)


def answer_query(
    audit: AuditCore,
    workspace: str,
    request: EventQuery,
    output: OutputFormat,
    out: Console,
    err: Console,
) -> None:
    """``query``'s answer, printed to ``out`` and ``err``: here, or in the owner of the
    embedded engine for a client (``auditcore.cli_owner``)."""
    page = audit.reader(workspace).events(request)  # a bad parameter is told first
    if not page.items:
        known_workspace(audit, workspace)
    if output is OutputFormat.JSON:
        out.out(
            json.dumps(
                {"items": [e.summary() for e in page.items], "next_cursor": page.next_cursor},
                indent=2,
            ),
            highlight=False,
        )
        return
    print_events(out, page.items, output)
    if page.next_cursor:
        # One line whatever the width, so it can be pasted back.
        err.print(f"next page: --cursor {page.next_cursor}", highlight=False, soft_wrap=True)


@app.command()
def export(
    workspace: WorkspaceOption,
    output_format: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="csv (spreadsheet-safe) or jsonl.")
    ] = ExportFormat.CSV,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write (default: stdout).")
    ] = None,
    filter_: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="NAME=VALUE, any filter of audit_events, e.g. action=incident.resolved or "
            "actor_id=user_alice (repeat; several values of one name mean any of them).",
        ),
    ] = None,
    since: Annotated[datetime | None, MomentOption] = None,
    until: Annotated[datetime | None, MomentOption] = None,
    recorded_since: Annotated[datetime | None, RecordedOption] = None,
    recorded_until: Annotated[datetime | None, RecordedOption] = None,
    text: Annotated[str | None, typer.Option(help="Free text; every word must appear.")] = None,
    proof: Annotated[
        bool,
        typer.Option(
            "--proof",
            help="Export the workspace's log between two tree sizes from the event store "
            "(JSON Lines in log order), with its signed checkpoint and a proof document "
            "beside it, for `verify_export.py` to check offline. Needs --out.",
        ),
    ] = False,
    from_size: Annotated[
        int, typer.Option(help="With --proof: the first log position.", min=0)
    ] = 0,
    to_size: Annotated[
        int | None,
        typer.Option(help="With --proof: a signed checkpoint's size (default: the latest)."),
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Export every matching event (newest first) as CSV or JSON Lines, streamed with flat
    memory. The export is itself recorded as an audit event."""
    if proof:
        if filter_ or since or until or text or output_format is not ExportFormat.JSONL:
            raise typer.BadParameter(
                "a proof export is the whole log between two tree sizes, as JSON Lines: "
                "give -f jsonl and --from-size/--to-size, not filters",
                param_hint="--proof",
            )
        if out is None:
            raise typer.BadParameter("give the file to write", param_hint="--out")
        with open_core(event_store, clickhouse) as audit:
            write_proof_export(audit, known_workspace(audit, workspace), out, from_size, to_size)
        return
    filters: dict[str, list[str]] = {}
    for item in filter_ or []:
        name, separator, value = item.partition("=")
        if not separator:
            raise typer.BadParameter(f"{item!r} should be NAME=VALUE", param_hint="--filter")
        filters.setdefault(name, []).append(value)
    request = EventQuery(
        filters, since, until, text, recorded_since=recorded_since, recorded_until=recorded_until
    )
    with open_core(event_store, clickhouse) as audit:
        reader = audit.reader(known_workspace(audit, workspace))
        record_export(audit, workspace, request, output_format, actor=cli_actor(), source="cli")
        if out is None:
            for chunk in export_chunks(reader, request, output_format):
                sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
            return
        # Counted only for the progress bar (stdout gets none).
        total = reader.count(request)
        with out.open("wb") as file, EventsProgress(errors) as progress:
            advance = progress.track("exporting", total)
            for chunk in export_chunks(reader, request, output_format, progress=advance):
                file.write(chunk)
    errors.print(f"Exported {total:,} events to {out} ({output_format.value}).")


@app.command()
def report(
    workspace: WorkspaceOption,
    since: Annotated[datetime, MomentOption],
    until: Annotated[datetime | None, MomentOption] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"
    ),
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Write a self-contained HTML audit report of one workspace and period: summary,
    activity chart, top actions/actors/targets, incident and monitor timings, the events."""
    from auditcore.report import generate_report  # noqa: PLC0415 - Jinja2 only for reports

    with open_core(event_store, clickhouse) as audit:
        known_workspace(audit, workspace)
        _project_with_progress(audit)
        html = generate_report(
            audit,
            workspace,
            since,
            until or datetime.now(UTC),
            actor=cli_actor(),
            source="cli",
        )
    out.write_text(html, encoding="utf-8")
    console.print(f"Report written to {out} ({len(html) // 1024:,} KiB). Open it in a browser.")


@app.command()
def stats(
    workspace: WorkspaceOption,
    group_by: Annotated[str, typer.Option(help="action, actor or source.")] = "action",
    interval: Annotated[str, typer.Option(help="minute, hour, day or auto.")] = "auto",
    since: Annotated[datetime | None, MomentOption] = None,
    until: Annotated[datetime | None, MomentOption] = None,
    action_prefix: Annotated[
        str | None, typer.Option(help="Only actions with this prefix.")
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Count events per interval, by action, actor or source (default: the last 24 hours)."""
    filters = {"action_prefix": [action_prefix]} if action_prefix else {}
    with open_core(event_store, clickhouse) as audit:
        result = audit.reader(workspace).stats(
            group_by=group_by,  # type: ignore[arg-type]  # validated by stats()
            interval=interval,  # type: ignore[arg-type]
            since=since,
            until=until,
            filters=filters,
        )
        if not result.buckets:  # a bad parameter is told first
            known_workspace(audit, workspace)
    if output is OutputFormat.TABLE:
        console.print(stats_table(result, f"Events per {result.interval} by {group_by}"))
        return
    rows = [
        {"bucket": b.bucket.isoformat(), "key": b.key, "events": b.events} for b in result.buckets
    ]
    if output is OutputFormat.JSON:
        console.out(
            json.dumps(
                {"interval": result.interval, "group_by": group_by, "buckets": rows}, indent=2
            ),
            highlight=False,
        )
    else:
        for row in rows:
            console.out(json.dumps(row), highlight=False)


AGGREGATES: dict[str, type[AuditedAggregate]] = {
    kind.created_by_action: kind for kind in (Incident, Monitor)
}


def _draft(line: str) -> dict[str, Any]:
    draft = json.loads(line)
    if not isinstance(draft, dict):
        raise TypeError(f"expected a JSON object, got {type(draft).__name__}")
    return draft


def _parse_target(text: str) -> Target:
    parts = text.split(":", 2)
    if len(parts) < 2:
        raise typer.BadParameter(
            f"{text!r} should be TYPE:ID or TYPE:ID:NAME", param_hint="--target"
        )
    return Target(type=parts[0], id=parts[1], name=parts[2] if len(parts) == 3 else None)


def main() -> None:
    try:
        app()
    except AuditcoreError as error:
        # One line whatever the terminal's width (scripts and people grep for it).
        errors.print(f"[bold red]error:[/bold red] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)
