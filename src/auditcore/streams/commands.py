"""``auditcore streams …``: configure log streams, see how they are doing, and run them.

Bad input is one line and exit 2 (``StreamConfigError``, an unknown id, a bad time). Settings
are ``--set key=value``; a credential is better given as ``--set-env key=VARIABLE`` (read from
the environment, so it is not in the shell's history or the process list). Nothing printed
shows a credential: each is ``***``.
"""

from __future__ import annotations

import os
import signal
import threading
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from auditcore.cli_options import (
    ClickHouseOption,
    EventStoreOption,
    console,
    errors,
    known_workspace,
    open_core,
)
from auditcore.clickhouse.connection import DEFAULT_CLICKHOUSE
from auditcore.errors import InvalidQueryError
from auditcore.store.settings import DEFAULT_EVENT_STORE
from auditcore.streams.config import (
    StreamConfigError,
    StreamInfo,
    StreamSpec,
    stream_configs,
)
from auditcore.streams.streamer import StreamRunner
from auditcore.timespec import parse_moment

streams_app = typer.Typer(
    help="Log streams: deliver a workspace's events to a webhook, SIEM or broker.",
    no_args_is_help=True,
)

IdArgument = Annotated[str, typer.Argument(help="The stream's id (ls_…).")]
WorkspaceOption = Annotated[
    str | None, typer.Option("--workspace", "-w", help="Only this workspace's streams.")
]


def _moment(text: str, option: str) -> datetime:
    try:
        return parse_moment(text)
    except ValueError as error:
        raise InvalidQueryError(option, str(error)) from None


def _pairs(items: list[str] | None, option: str) -> list[tuple[str, str]]:
    pairs = []
    for item in items or []:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise StreamConfigError(f"{option}: give key=value, not {item[:40]!r}")
        pairs.append((key, value))
    return pairs


def _value(text: str) -> Any:
    """Numbers, booleans and JSON lists as such (``timeout=5``, ``servers=["nats://a",
    "nats://b"]``), everything else as text."""
    try:
        import orjson  # noqa: PLC0415 - only when a setting is given

        value = orjson.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, int | float | bool | list) else text


@streams_app.command()
def add(
    workspace: Annotated[str, typer.Option("--workspace", "-w", help="The stream's workspace.")],
    name: Annotated[str, typer.Option(help="A name, unique in the workspace.")],
    kind: Annotated[str, typer.Option(help="Destination: webhook, …")] = "webhook",
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="A destination setting, key=value (repeat)."),
    ] = None,
    set_env: Annotated[
        list[str] | None,
        typer.Option(
            "--set-env",
            help="A setting read from an environment variable, key=VARIABLE (for credentials).",
        ),
    ] = None,
    payload_format: Annotated[
        str, typer.Option("--format", help="Payload format: envelope, …")
    ] = "envelope",
    filter_: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            help="Only events matching name=value (repeat; the API's "
            "filters: action, actor_id, target_type, target_id, source, …).",
        ),
    ] = None,
    max_events: Annotated[int, typer.Option(help="Most events in one batch.")] = 500,
    max_bytes: Annotated[int, typer.Option(help="Most payload bytes in one batch.")] = 1_000_000,
    max_wait: Annotated[
        float, typer.Option(help="Seconds a partial batch waits for more events.")
    ] = 1.0,
    max_attempts: Annotated[
        int, typer.Option(help="Failed attempts of one batch before dead-letter.")
    ] = 8,
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Deliver from the first event recorded at or after this "
            "time (ISO 8601 or an age: 7d); default: only new events.",
        ),
    ] = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Add a stream to a workspace (it starts delivering wherever `streams run` or `serve`
    runs)."""
    settings: dict[str, Any] = {key: _value(value) for key, value in _pairs(set_, "--set")}
    for key, variable in _pairs(set_env, "--set-env"):
        if variable not in os.environ:
            raise StreamConfigError(f"--set-env {key}: the variable {variable} is not set")
        settings[key] = os.environ[variable]
    filters: dict[str, list[str]] = {}
    for key, value in _pairs(filter_, "--filter"):
        filters.setdefault(key, []).append(value)
    start = None if from_ is None else _moment(from_, "--from")
    spec = StreamSpec(
        name=name,
        kind=kind,
        settings=settings,
        format=payload_format,
        filters=filters,
        max_events=max_events,
        max_bytes=max_bytes,
        max_wait=max_wait,
        max_attempts=max_attempts,
        start=start,
    )
    with open_core(event_store, clickhouse) as audit:
        known_workspace(audit, workspace)
        configs = stream_configs(audit)
        try:
            head = audit.app.recorder.max_notification_id() or 0
            info = configs.add(workspace, spec, head)
        finally:
            configs.close()
    console.print(
        f"{info.id}  {info.name}  ({info.kind}, {info.format})", highlight=False, markup=False
    )
    if not info.encrypted:
        errors.print(
            "note: no master key is set, so the stream's credentials are stored unencrypted "
            "in the control database (set AUDITCORE_MASTER_KEY_FILE to encrypt them)",
            highlight=False,
        )


def _table(streams: list[StreamInfo], head: int | None = None) -> Table:
    table = Table(title_justify="left")
    columns = ["id", "workspace", "name", "kind", "state", "delivered", "attempts"]
    if head is not None:
        columns.append("behind")
    columns.append("last error")
    for column in columns:
        table.add_column(column)
    for info in streams:
        row = [
            info.id,
            info.workspace_id,
            info.name,
            f"{info.kind}/{info.format}",
            info.state,
            f"{info.delivered:,}",
            str(info.attempts),
        ]
        if head is not None:
            row.append(f"{max(head - info.position, 0):,}")
        row.append(info.last_error or "")
        table.add_row(*(Text(cell) for cell in row))  # names are text, not markup
    return table


@streams_app.command("list")
def list_streams(
    workspace: WorkspaceOption = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Every stream with its destination, format, filters and settings (credentials ***)."""
    with open_core(event_store, clickhouse) as audit:
        configs = stream_configs(audit)
        try:
            streams = configs.streams(workspace)
        finally:
            configs.close()
    for info in streams:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(info.settings.items()))
        filters = ", ".join(f"{k}={'|'.join(v)}" for k, v in sorted(info.filters.items()))
        console.print(
            f"{info.id}  {info.workspace_id}  {info.name}  {info.kind}/{info.format}  "
            f"{info.state}  [{shown}]" + (f"  filters: {filters}" if filters else ""),
            highlight=False,
            markup=False,
            soft_wrap=True,
        )


@streams_app.command()
def status(
    workspace: WorkspaceOption = None,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Each stream's state (active, paused, dead_letter), events delivered, failed attempts of
    the batch due, how far behind the store's head it is, and its last error."""
    with open_core(event_store, clickhouse) as audit:
        configs = stream_configs(audit)
        try:
            streams = configs.streams(workspace)
            head = audit.app.recorder.max_notification_id() or 0
        finally:
            configs.close()
    console.print(_table(streams, head))


def _change(verb: str, stream_id: str, event_store: str, clickhouse: str, **extra: Any) -> None:
    with open_core(event_store, clickhouse) as audit:
        configs = stream_configs(audit)
        try:
            if verb == "remove":
                configs.remove(None, stream_id)
                console.print(f"{stream_id}: removed", highlight=False)
                return
            info = getattr(configs, verb)(None, stream_id, **extra)
        finally:
            configs.close()
    console.print(f"{info.id}: {info.state}", highlight=False)


@streams_app.command()
def pause(
    stream_id: IdArgument,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Stop delivering (the position is kept; `resume` goes on from it)."""
    _change("pause", stream_id, event_store, clickhouse)


@streams_app.command()
def resume(
    stream_id: IdArgument,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Deliver again from where the stream stopped (a dead-lettered batch is tried anew)."""
    _change("resume", stream_id, event_store, clickhouse)


@streams_app.command()
def remove(
    stream_id: IdArgument,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Delete the stream and its credentials."""
    _change("remove", stream_id, event_store, clickhouse)


@streams_app.command()
def replay(
    stream_id: IdArgument,
    from_: Annotated[
        str,
        typer.Option(
            "--from",
            help="ISO 8601 or an age (7d): deliver again from the "
            "first event recorded at or after it.",
        ),
    ],
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Deliver again from a moment on (and leave dead-letter or pause)."""
    since = _moment(from_, "--from")
    _change("replay", stream_id, event_store, clickhouse, since=since)


@streams_app.command()
def run(
    poll: Annotated[
        float, typer.Option(min=0.05, help="Seconds between looks for new or resumed streams.")
    ] = 2.0,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
) -> None:
    """Deliver every active stream, in the foreground, until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with open_core(event_store, clickhouse) as audit:
        configs = stream_configs(audit)
        try:
            runner = StreamRunner(
                audit.app, configs, audit.read_models.get("audit_events"), poll=poll
            )
            console.print("delivering log streams (Ctrl-C to stop)", highlight=False)
            runner.run(stop)
        finally:
            configs.close()
