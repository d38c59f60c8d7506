"""``auditcore serve``: the HTTP API and web viewer, with processors in-process when embedded."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from dataclasses import replace
from typing import Annotated, Any

import typer

from auditcore.api.config import ApiConfig, ResourceLimits, ServerTimeouts
from auditcore.cli_actions import ActionsOption, load_actions
from auditcore.cli_options import (
    ClickHouseOption,
    ClusterOption,
    EventStoreOption,
    console,
    open_core,
)
from auditcore.cli_owner import command_handler
from auditcore.clickhouse.connection import DEFAULT_CLICKHOUSE
from auditcore.clickhouse.owner import own_engine
from auditcore.lifecycle.commands import (
    ArchiveDirOption,
    ArchiveFormatOption,
    scheduled_retention,
)
from auditcore.store.settings import DEFAULT_EVENT_STORE

_LIMITS, _TIMEOUTS = ResourceLimits(), ServerTimeouts()


def _limit(help: str, variable: str) -> Any:
    """An option of the server's limits, also read from ``AUDITCORE_<variable>``."""
    return typer.Option(help=help, envvar=f"AUDITCORE_{variable}", rich_help_panel="Limits")


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    trusted_proxy: Annotated[
        list[str] | None,
        typer.Option(
            "--trusted-proxy",
            help="Address or network of a proxy whose X-Forwarded-For is believed (repeat).",
        ),
    ] = None,
    processors: Annotated[
        bool | None,
        typer.Option(
            "--processors/--no-processors",
            help="Project new events into ClickHouse in this process (default: yes with the "
            "embedded chDB, which only one process may open; no with a ClickHouse server, "
            "where `auditcore project --follow` runs as its own worker).",
        ),
    ] = None,
    actions: ActionsOption = None,
    streams: Annotated[
        bool,
        typer.Option(
            "--streams/--no-streams",
            help="Deliver the log streams in this process (`auditcore streams run` does it "
            "on its own).",
        ),
    ] = True,
    max_body: Annotated[int, typer.Option(help="Largest request body, in bytes.")] = 1_048_576,
    max_batch: Annotated[int, typer.Option(help="Most events in one POST.")] = 1000,
    frame_ancestors: Annotated[
        str,
        typer.Option(
            help="Who may show the viewer, docs and reports in a frame (CSP frame-ancestors): "
            "'none', 'self' or origins such as https://intranet.example.com.",
            envvar="AUDITCORE_FRAME_ANCESTORS",
        ),
    ] = "'none'",
    rate_limit: Annotated[
        float, _limit("Requests per second per API key, sustained (0: no limit).", "RATE_LIMIT")
    ] = _LIMITS.rate_per_second,
    rate_burst: Annotated[
        int, _limit("Requests an API key may make at once.", "RATE_BURST")
    ] = _LIMITS.rate_burst,
    max_writes: Annotated[
        int, _limit("Event-recording requests at once per workspace.", "MAX_WRITES")
    ] = _LIMITS.writes_per_workspace,
    max_exports: Annotated[
        int, _limit("Exports running at once per workspace.", "MAX_EXPORTS")
    ] = _LIMITS.exports_per_workspace,
    max_reports: Annotated[
        int, _limit("Reports being generated at once per workspace.", "MAX_REPORTS")
    ] = _LIMITS.reports_per_workspace,
    max_live: Annotated[
        int, _limit("Open live streams per workspace.", "MAX_LIVE")
    ] = _LIMITS.live_per_workspace,
    live_buffer: Annotated[
        int, _limit("Bytes of events queued per live stream before `overflow`.", "LIVE_BUFFER")
    ] = _LIMITS.live_buffer_bytes,
    auth_failures: Annotated[
        int,
        _limit(
            "Failed authentications per client address in --auth-window before 429.",
            "AUTH_FAILURES",
        ),
    ] = _LIMITS.auth_failures,
    auth_window: Annotated[
        float, _limit("Seconds over which failed authentications count.", "AUTH_WINDOW")
    ] = _LIMITS.auth_window,
    security_workspace: Annotated[
        str,
        _limit(
            "Workspace where throttled failed authentication is recorded ('' for none).",
            "SECURITY_WORKSPACE",
        ),
    ] = _LIMITS.security_workspace or "",
    query_timeout: Annotated[
        float, _limit("Seconds one ClickHouse query may run.", "QUERY_TIMEOUT")
    ] = _LIMITS.query_timeout,
    query_memory: Annotated[
        int, _limit("Bytes of memory one ClickHouse query may use.", "QUERY_MEMORY")
    ] = _LIMITS.query_memory_bytes,
    query_rows: Annotated[
        int, _limit("Rows one ClickHouse query may return.", "QUERY_ROWS")
    ] = _LIMITS.query_result_rows,
    bulk_cpu: Annotated[
        float,
        _limit("CPU cores exports and live catch-ups may use while requests arrive.", "BULK_CPU"),
    ] = _LIMITS.bulk_cpu,
    revocation_check: Annotated[
        float,
        _limit(
            "Seconds between checks that open streams' keys are not revoked.", "REVOCATION_CHECK"
        ),
    ] = _LIMITS.revocation_check,
    switch_interval: Annotated[
        float,
        _limit(
            "Seconds a thread may hold Python's interpreter lock while a request waits for it.",
            "SWITCH_INTERVAL",
        ),
    ] = _LIMITS.switch_interval,
    header_timeout: Annotated[
        float, _limit("Seconds for a request's head to arrive.", "HEADER_TIMEOUT")
    ] = _TIMEOUTS.header_timeout,
    body_timeout: Annotated[
        float, _limit("Seconds to wait for each next piece of a request body.", "BODY_TIMEOUT")
    ] = _TIMEOUTS.body_timeout,
    keepalive_timeout: Annotated[
        float, _limit("Seconds an idle connection stays open.", "KEEPALIVE_TIMEOUT")
    ] = _TIMEOUTS.keepalive_timeout,
    max_connections: Annotated[
        int, _limit("Open connections at once (503 beyond).", "MAX_CONNECTIONS")
    ] = _TIMEOUTS.max_connections,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    cluster: ClusterOption = None,
    retention: Annotated[
        bool,
        typer.Option(
            "--retention/--no-retention",
            envvar="AUDITCORE_RETENTION",
            help="Run retention (archive, then prune) in this process every --retention-every "
            "seconds; one process at a time per store.",
            rich_help_panel="Retention",
        ),
    ] = True,
    retention_every: Annotated[
        float,
        typer.Option(
            min=1,
            envvar="AUDITCORE_RETENTION_EVERY",
            help="Seconds between retention passes.",
            rich_help_panel="Retention",
        ),
    ] = 3600.0,
    archive_dir: ArchiveDirOption = None,
    archive_format: ArchiveFormatOption = "jsonl",
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs) and the web viewer (at /)."""
    if switch_interval <= 0:
        raise typer.BadParameter("give a number of seconds above 0", param_hint="--switch-interval")
    # Imported here: the server stack takes a second or more to import, and every other
    # command would pay for it at start-up.
    import uvicorn  # noqa: PLC0415

    from auditcore.api.app import create_app  # noqa: PLC0415
    from auditcore.api.server import listening_socket, server_config  # noqa: PLC0415
    from auditcore.tenancy.directory import Directory  # noqa: PLC0415

    sock = listening_socket(host, port)
    load_actions(actions)
    with open_core(event_store, clickhouse, cluster) as audit, ExitStack() as owning:
        target = audit.settings.clickhouse_target
        embedded = target.embedded
        config = ApiConfig(
            trusted_proxies=ApiConfig.networks(trusted_proxy or []),
            max_body_bytes=max_body,
            max_batch=max_batch,
            run_processors=embedded if processors is None else processors,
            limits=replace(
                _LIMITS,
                rate_per_second=rate_limit,
                rate_burst=rate_burst,
                writes_per_workspace=max_writes,
                exports_per_workspace=max_exports,
                reports_per_workspace=max_reports,
                live_per_workspace=max_live,
                live_buffer_bytes=live_buffer,
                auth_failures=auth_failures,
                auth_window=auth_window,
                security_workspace=security_workspace or None,
                query_timeout=query_timeout,
                query_memory_bytes=query_memory,
                query_result_rows=query_rows,
                bulk_cpu=bulk_cpu,
                revocation_check=revocation_check,
                switch_interval=switch_interval,
            ),
            server=ServerTimeouts(header_timeout, body_timeout, keepalive_timeout, max_connections),
            frame_ancestors=frame_ancestors,
            run_streams=streams,
        )
        directory = Directory(audit.settings)
        try:
            owning.enter_context(own_engine(target, audit.migrate, "serve", command_handler(audit)))
            if not embedded:
                audit.migrate()
            console.print(
                f"auditcore on http://{host}:{port}/ (API docs: /docs) — events in "
                f"{audit.settings.describe_event_store()}, read models in "
                f"{audit.settings.clickhouse_target.describe()}"
                + (", projecting in this process" if config.run_processors else "")
            )
            app = create_app(audit, directory, config)
            owning.enter_context(
                scheduled_retention(
                    audit, retention_every if retention else None, archive_dir, archive_format
                )
            )
            # The whole process's setting, so only here, where auditcore owns the process.
            sys.setswitchinterval(config.limits.switch_interval)
            uvicorn.Server(server_config(app, host, port, config.server)).run(sockets=[sock])
        finally:
            directory.close()
