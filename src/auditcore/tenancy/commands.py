"""``auditcore workspaces …`` and ``auditcore keys …``: the control plane from the shell.

Each change is also recorded as an audit event in the workspace it concerns.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from auditcore.cli_options import (
    ClickHouseOption,
    EventStoreOption,
    WorkspaceOption,
    cli_actor,
    console,
    open_core,
)
from auditcore.clickhouse.connection import DEFAULT_CLICKHOUSE
from auditcore.events.envelope import Target
from auditcore.facade import AuditCore
from auditcore.store.settings import DEFAULT_EVENT_STORE
from auditcore.tenancy.scopes import Scope

if TYPE_CHECKING:
    from auditcore.tenancy.directory import Directory

workspaces_app = typer.Typer(help="Create and list workspaces (tenants).", no_args_is_help=True)
keys_app = typer.Typer(
    help="Issue, list and revoke API keys (one workspace each; read and/or write).",
    no_args_is_help=True,
)


@contextmanager
def _opened(
    event_store: str, clickhouse: str = DEFAULT_CLICKHOUSE
) -> Iterator[tuple[AuditCore, Directory]]:
    """The event store (to record each change) and the control plane's tables."""
    with open_core(event_store, clickhouse) as audit:
        from auditcore.tenancy.directory import Directory  # noqa: PLC0415 - SQLAlchemy

        directory = Directory(audit.settings)
        try:
            yield audit, directory
        finally:
            directory.close()


def _record(
    audit: AuditCore, action: str, workspace_id: str, target: Target, **metadata: object
) -> None:
    audit.record_control_event(
        action,
        workspace_id=workspace_id,
        metadata=metadata,
        actor=cli_actor(),
        source="cli",
        targets=[target],
    )


@workspaces_app.command("create")
def create_workspace(
    workspace_id: Annotated[str, typer.Argument(help="The workspace id, e.g. acme.")],
    name: Annotated[str | None, typer.Option(help="A display name.")] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Create a workspace; its events and keys are sealed off from every other one."""
    with _opened(event_store, clickhouse) as (audit, directory):
        row = directory.create_workspace(workspace_id, name)
        _record(
            audit,
            "auditcore.workspace.created",
            row.id,
            Target(type="workspace", id=row.id, name=row.name),
            name=row.name,
        )
    console.print(
        f"Workspace [bold]{row.id}[/bold] created. Next: auditcore keys create -w {row.id}"
    )


@workspaces_app.command("list")
def list_workspaces(event_store: EventStoreOption = DEFAULT_EVENT_STORE) -> None:
    """Every workspace."""
    with _opened(event_store) as (_, directory):
        rows = directory.workspaces()
    table = Table("id", "name", "created", title="Workspaces")
    for row in rows:
        table.add_row(row.id, row.name, f"{row.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


@keys_app.command("create")
def create_key(
    workspace: WorkspaceOption,
    name: Annotated[str, typer.Option(help="What the key is for, e.g. ci-deployer.")],
    scope: Annotated[
        list[Scope] | None,
        typer.Option(
            "--scope",
            "-s",
            help="read, write, admin or embed (mints viewer tokens) (repeat); default: read.",
        ),
    ] = None,
    entitlement: Annotated[
        list[str] | None,
        typer.Option(
            "--entitlement",
            help="Only these read models' entitlements, e.g. audit_events:read (repeat); "
            "default: every read model.",
        ),
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Issue a key. The key is printed once: it is stored only as a hash."""
    with _opened(event_store, clickhouse) as (audit, directory):
        issued = directory.create_key(workspace, name, scope or [Scope.READ], entitlement)
        info = issued.info
        _record(
            audit,
            "auditcore.api_key.created",
            workspace,
            Target(type="api_key", id=info.id, name=info.name),
            key_id=info.id,
            name=info.name,
            scopes=[str(s) for s in info.scopes],
            entitlements=list(info.entitlements) if info.entitlements is not None else None,
        )
    console.print(
        f"API key [bold]{info.id}[/bold] ({', '.join(info.scopes)}) for workspace {workspace}:"
    )
    # Plain print: the key must be copyable as is, whatever the terminal width.
    print(issued.token)
    console.print("[yellow]Store it now: it is shown only once.[/yellow]")


@keys_app.command("list")
def list_keys(
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Only this workspace's keys.")
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
) -> None:
    """Keys with their scopes and state (never the secret)."""
    with _opened(event_store) as (_, directory):
        keys = directory.keys(workspace)
    table = Table("key id", "workspace", "name", "scopes", "entitlements", "created", "state")
    for key in keys:
        table.add_row(
            key.id,
            key.workspace_id,
            key.name,
            ", ".join(key.scopes),
            ", ".join(key.entitlements) if key.entitlements is not None else "all",
            f"{key.created_at:%Y-%m-%d %H:%M}",
            f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke_key(
    key_id: Annotated[
        str | None, typer.Argument(help="The key's id (key_…), from `keys list`.")
    ] = None,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", "-w", help="Revoke every key of this workspace instead."),
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Revoke a key, or every key of a workspace: every later request presenting one is
    refused, and a running server ends their live streams and exports within seconds."""
    if (key_id is None) == (workspace is None):
        raise typer.BadParameter("give a key id, or --workspace for all of its keys")
    with _opened(event_store, clickhouse) as (audit, directory):
        if key_id is not None:
            revoked = [directory.revoke_key(key_id)]
        else:
            assert workspace is not None
            revoked = directory.revoke_workspace_keys(workspace)
        for info in revoked:
            _record(
                audit,
                "auditcore.api_key.revoked",
                info.workspace_id,
                Target(type="api_key", id=info.id, name=info.name),
                key_id=info.id,
                name=info.name,
            )
    for info in revoked:
        console.print(f"Key {info.id} ({info.name}) of workspace {info.workspace_id} revoked.")
    if not revoked:
        console.print(f"Workspace {workspace} has no keys left to revoke.")


@keys_app.command("rotate-secret")
def rotate_secret(event_store: EventStoreOption = DEFAULT_EVENT_STORE) -> None:
    """Replace the server secret that signs paging cursors: every cursor issued before is
    refused from then on (running servers pick the new secret up within 30 s). API keys are
    not affected."""
    with open_core(event_store) as audit:
        from auditcore.store.secrets import CURSOR_SECRET  # noqa: PLC0415 - SQLAlchemy

        audit.secrets.rotate(CURSOR_SECRET)
    console.print("Cursor secret rotated: earlier next_cursor values are no longer accepted.")
