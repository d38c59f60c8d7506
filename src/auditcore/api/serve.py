"""``auditcore serve``: the HTTP API and web viewer, with processors in-process when embedded."""

from __future__ import annotations

import importlib
from typing import Annotated

import typer
import uvicorn

from auditcore.api.app import create_app
from auditcore.api.config import ApiConfig
from auditcore.cli_options import (
    ClickHouseOption,
    ClusterOption,
    EventStoreOption,
    console,
    open_core,
)
from auditcore.clickhouse.connection import DEFAULT_CLICKHOUSE
from auditcore.store.settings import DEFAULT_EVENT_STORE
from auditcore.tenancy.directory import Directory


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
    actions: Annotated[
        list[str] | None,
        typer.Option(
            "--actions",
            help="Python module that registers your actions in auditcore.default_registry "
            "(repeat).",
        ),
    ] = None,
    max_body: Annotated[int, typer.Option(help="Largest request body, in bytes.")] = 1_048_576,
    max_batch: Annotated[int, typer.Option(help="Most events in one POST.")] = 1000,
    event_store: EventStoreOption = DEFAULT_EVENT_STORE,
    clickhouse: ClickHouseOption = DEFAULT_CLICKHOUSE,
    cluster: ClusterOption = None,
) -> None:
    """Serve the HTTP API (OpenAPI docs at /docs) and the web viewer (at /)."""
    for module in actions or []:
        importlib.import_module(module)
    with open_core(event_store, clickhouse, cluster) as audit:
        embedded = audit.settings.clickhouse_target.embedded
        config = ApiConfig(
            trusted_proxies=ApiConfig.networks(trusted_proxy or []),
            max_body_bytes=max_body,
            max_batch=max_batch,
            run_processors=embedded if processors is None else processors,
        )
        audit.migrate()
        directory = Directory(audit.settings)
        try:
            console.print(
                f"auditcore on http://{host}:{port}/ (API docs: /docs) — events in "
                f"{audit.settings.describe_event_store()}, read models in "
                f"{audit.settings.clickhouse_target.describe()}"
                + (", projecting in this process" if config.run_processors else "")
            )
            # auditcore decides whom to believe about X-Forwarded-For (--trusted-proxy);
            # uvicorn's own handling would trust 127.0.0.1 behind our back.
            uvicorn.run(
                create_app(audit, directory, config), host=host, port=port, proxy_headers=False
            )
        finally:
            directory.close()
