"""``auditcore actions …``: list the registered actions; register one's metadata schema as
JSON Schema (stored in the control database: every process of the installation sees it).

Also ``load_actions``: the ``--actions`` option's Python modules (your own actions registered in
Python), given as a module importable from the current directory or as a ``.py`` file. A module
that cannot be imported is a one-line ``ConfigurationError`` (the CLI exits 2), never a
traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from auditcore.cli_options import EventStoreOption, FormatOption, cli_actor, console, open_core
from auditcore.errors import ConfigurationError, one_line
from auditcore.events.actions import ActionSpec
from auditcore.render import OutputFormat
from auditcore.store.settings import DEFAULT_EVENT_STORE, Settings

actions_app = typer.Typer(
    help="The registered actions; register your own as JSON Schema (no Python needed).",
    invoke_without_command=True,
)

ActionsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--actions",
        help="Your actions registered in Python: a module importable from the current "
        "directory (myapp.audit_actions) or a .py file (repeat).",
    ),
]


def load_actions(modules: list[str] | None) -> None:
    """Import each module that registers actions in ``auditcore.default_registry``."""
    for given in modules or []:
        try:
            _import(given)
        except Exception as error:  # whatever the module raises: one line
            raise ConfigurationError(
                f"--actions {given}: cannot load it: {type(error).__name__}: {one_line(error)}"
            ) from None


def _import(given: str) -> None:
    if not (given.endswith(".py") or os.sep in given):
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.insert(0, os.getcwd())  # as `python -m` would: the current directory
        importlib.import_module(given)
        return
    path = Path(given)
    if not path.is_file():
        raise FileNotFoundError(f"no file {given}")
    name = f"auditcore_actions_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{given} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


@actions_app.callback()
def actions(
    ctx: typer.Context,
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace",
            "-w",
            envvar="AUDITCORE_WORKSPACE",
            help="Also list the actions registered for this workspace only.",
        ),
    ] = None,
    modules: ActionsOption = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
) -> None:
    """List the registered actions and their metadata fields (Python and JSON Schema)."""
    if ctx.invoked_subcommand is not None:
        return
    load_actions(modules)
    with open_core(event_store) as audit:
        registered = audit.action_schemas.listing(workspace)
        python = list(audit.registry)
    table = Table(title="Registered actions", title_justify="left")
    for column in ("action", "schema version", "metadata fields", "defined"):
        table.add_column(column)
    for spec in python:
        table.add_row(spec.name, str(spec.version), _fields(spec) or "(none)", "python")
    for entry in registered:
        scope = f"workspace {entry.workspace_id}" if entry.workspace_id else "every workspace"
        properties = entry.schema.get("properties", {})
        required = set(entry.schema.get("required", []))
        fields = ", ".join(f"{n}{'' if n in required else '?'}" for n in properties)
        table.add_row(entry.name, str(entry.version), fields or "(none)", f"JSON Schema, {scope}")
    console.print(table)


def _fields(spec: ActionSpec) -> str:
    return ", ".join(
        f"{name}{'' if info.is_required() else '?'}"
        for name, info in spec.schema.model_fields.items()
    )


@actions_app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="Dotted lowercase action name, e.g. deploy.started.")],
    schema_file: Annotated[
        Path,
        typer.Option(
            "--schema",
            help="JSON Schema (draft 2020-12) of the action's metadata ('-': standard input).",
            allow_dash=True,
        ),
    ],
    version: Annotated[
        int | None,
        typer.Option(
            help="The schema version (default: the next one; the same schema again "
            "registers nothing)."
        ),
    ] = None,
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace",
            "-w",
            help="Register it for this workspace only (default: every workspace).",
        ),
    ] = None,
    description: Annotated[str, typer.Option(help="What the action means.")] = "",
    modules: ActionsOption = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Register an action's metadata schema; `record`, `import`, `serve` and every dispatcher
    of this installation validate its events with it from then on."""
    schema = _read_schema(schema_file)
    load_actions(modules)
    with open_core(event_store) as audit:
        if workspace is not None:
            _existing_workspace(audit.settings, workspace)
        try:
            entry = audit.register_action(
                name,
                schema,
                workspace_id=workspace,
                version=version,
                description=description,
                registered_by=cli_actor().id,
            )
        except ValueError as error:
            raise ConfigurationError(f"cannot register {name!r}: {one_line(error)}") from None
    if output is not OutputFormat.TABLE:
        console.out(
            json.dumps(
                {
                    "name": entry.name,
                    "version": entry.version,
                    "workspace_id": entry.workspace_id,
                    "created": entry.created,
                }
            ),
            highlight=False,
        )
        return
    scope = f"workspace {workspace}" if workspace else "every workspace"
    verb = "registered" if entry.created else "already registered (nothing changed):"
    console.print(
        f"{entry.name} {verb} schema version {entry.version}, for {scope}", highlight=False
    )


def _read_schema(path: Path) -> Any:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"--schema {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"--schema {path}: not UTF-8 text") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"--schema {path}: not valid JSON: {error}") from None


def _existing_workspace(settings: Settings, workspace_id: str) -> None:
    """Refuse a workspace that does not exist (``NotFoundError``: one line, exit 2)."""
    from auditcore.tenancy.directory import Directory  # noqa: PLC0415

    directory = Directory(settings)
    try:
        directory.workspace(workspace_id)
    finally:
        directory.close()
