"""The ``auditcore`` command line."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from auditcore.errors import AuditcoreError
from auditcore.events.envelope import Actor, ActorType, Target
from auditcore.facade import AuditCore
from auditcore.render import OutputFormat, print_events
from auditcore.store.settings import DEFAULT_EVENT_STORE, EVENT_STORE_VARIABLE, Settings

app = typer.Typer(
    help="Record audit events into an event store and read them back.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
# Piped output is read by people too (less, CI logs): do not squeeze it into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 180)
errors = Console(stderr=True)

EventStoreOption = Annotated[
    str,
    typer.Option(
        "--event-store",
        envvar=EVENT_STORE_VARIABLE,
        help="postgresql:// URL, or path to a SQLite file (the embedded default).",
        show_default=True,
    ),
]
WorkspaceOption = Annotated[
    str, typer.Option("--workspace", "-w", envvar="AUDITCORE_WORKSPACE", help="Workspace (tenant).")
]
FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]


def _open(event_store: str) -> AuditCore:
    return AuditCore(Settings(event_store=event_store))


@app.command()
def demo(
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    workspace: WorkspaceOption = "acme",
) -> None:
    """Record a realistic afternoon of incident and monitor activity, then show it."""
    from auditcore.demo import run_demo  # noqa: PLC0415 - only the demo needs its sample actions

    with _open(event_store) as audit:
        run = run_demo(audit, workspace)
        ordered = sorted(run.events, key=lambda event: event.occurred_at)
        print_events(console, ordered, OutputFormat.TABLE, f"Workspace {workspace}: what happened")
        if run.incident is not None:
            history = audit.history(run.incident.id, workspace_id=workspace)
            print_events(
                console,
                history,
                OutputFormat.TABLE,
                f"History of incident {run.incident.title!r} ({run.incident.id}), read back "
                "from the store",
            )
        console.print("[bold]Refused by the domain rules (nothing recorded):[/bold]")
        for refusal in run.refused:
            console.print(f"  • {refusal}")
        console.print(
            f"\nRecorded {len(run.events)} events in {audit.settings.describe_event_store()}. "
            f"Try: [bold]auditcore history {run.incident.id if run.incident else 'STREAM_ID'} "
            f"-w {workspace}[/bold]"
        )


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
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Record one standalone event."""
    try:
        parsed_metadata: Any = json.loads(metadata)
    except json.JSONDecodeError as error:
        raise typer.BadParameter(f"not valid JSON: {error}", param_hint="--metadata") from None
    with _open(event_store) as audit:
        event = audit.record(
            action,
            workspace_id=workspace,
            actor=Actor(id=actor_id, type=actor_type, name=actor_name),
            targets=[_parse_target(text) for text in targets or []],
            metadata=parsed_metadata,
            source=source,
            event_id=event_id,
        )
        print_events(console, [event], output)


@app.command()
def history(
    stream_id: Annotated[UUID, typer.Argument(help="The stream (aggregate) id.")],
    workspace: WorkspaceOption,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Show a stream's full history, in version order."""
    with _open(event_store) as audit:
        print_events(console, audit.history(stream_id, workspace_id=workspace), output)


@app.command()
def get(
    event_id: Annotated[UUID, typer.Argument(help="The event id.")],
    workspace: WorkspaceOption,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    output: FormatOption = OutputFormat.JSON,
) -> None:
    """Show one event by its id."""
    with _open(event_store) as audit:
        print_events(console, [audit.event(event_id, workspace_id=workspace)], output)


@app.command()
def actions() -> None:
    """List the registered actions and their metadata fields."""
    from auditcore.demo import register_product_actions  # noqa: PLC0415
    from auditcore.events.actions import default_registry  # noqa: PLC0415

    registry = default_registry.copy()
    register_product_actions(registry)
    table = Table(title="Registered actions", title_justify="left")
    for column in ("action", "schema version", "metadata fields"):
        table.add_column(column)
    for spec in registry:
        fields = ", ".join(
            f"{name}{'' if info.is_required() else '?'}"
            for name, info in spec.schema.model_fields.items()
        )
        table.add_row(spec.name, str(spec.version), fields or "(none)")
    console.print(table)


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
        errors.print(f"[bold red]error:[/bold red] {error}", highlight=False)
        sys.exit(2)
