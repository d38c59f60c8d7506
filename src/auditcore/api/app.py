"""The HTTP service: ``create_app`` wires the routes, errors, viewer and background work."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Annotated, Any

from fastapi import FastAPI, Path
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from auditcore.api.config import ApiConfig
from auditcore.api.deps import Services
from auditcore.api.docs import install_docs
from auditcore.api.errors import install_error_handlers
from auditcore.api.headers import SecurityHeaders
from auditcore.api.limits import LIMITED, RequestGuard
from auditcore.api.live import LiveHub
from auditcore.api.middleware import RequestIdAndBodyLimit
from auditcore.api.openapi import build_openapi, data_actions_key
from auditcore.api.pacing import CpuPacer
from auditcore.api.routes import (
    actions,
    deadletters,
    embed,
    erasure,
    events,
    export,
    health,
    integrity,
    live,
    models,
    reports,
    retention,
    stats,
    streams,
    workos,
)
from auditcore.api.sessions import SessionKind, Sessions
from auditcore.facade import AuditCore
from auditcore.streams.config import stream_configs
from auditcore.streams.streamer import StreamRunner
from auditcore.tenancy.directory import Directory
from auditcore.tenancy.keycache import VerifiedKeys

STATIC = files("auditcore.api") / "static"


def create_app(audit: AuditCore, directory: Directory, config: ApiConfig | None = None) -> FastAPI:
    """The ASGI app. The caller owns ``audit`` and ``directory`` (and closes them); the app
    owns its processors' threads and the live tail, started and stopped with it."""
    config = config or ApiConfig()
    limits = config.limits
    pacer = CpuPacer(limits.bulk_cpu)
    hub = LiveHub(
        audit.app,
        budget=limits.live_buffer_bytes,
        catch_up_readers=limits.live_catch_up_readers,
        pacer=pacer,
    )
    sessions = Sessions(
        directory,
        {
            SessionKind.WRITE: limits.writes_per_workspace,
            SessionKind.EXPORT: limits.exports_per_workspace,
            SessionKind.REPORT: limits.reports_per_workspace,
            SessionKind.LIVE: limits.live_per_workspace,
        },
        check_interval=limits.revocation_check,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        threads = (
            audit.projections.follow(stop) + audit.integrity.follow(stop)
            if config.run_processors
            else []
        )
        if config.run_streams:
            audit_events = audit.read_models.get("audit_events")
            threads += StreamRunner(audit.app, configs, audit_events).follow(stop)
        sessions.start()
        try:
            yield
        finally:
            sessions.stop()
            hub.close()
            stop.set()
            for thread in threads:
                thread.join(timeout=10)
            configs.close()

    app = FastAPI(
        docs_url=None,  # served from files shipped with the package (install_docs)
        redoc_url=None,
        title="auditcore",
        summary="Who did what, when: record audit events and ask them back.",
        version="1",
        lifespan=lifespan,
        # A redirect's Location would be built from the request's Host header (an open
        # redirect); a path with a trailing slash is simply not found.
        redirect_slashes=False,
    )
    configs = app.state.stream_configs = stream_configs(audit)
    app.state.services = Services(
        audit,
        directory,
        hub,
        config,
        RequestGuard(limits),
        sessions,
        pacer,
        VerifiedKeys(directory),
    )
    app.add_middleware(
        RequestIdAndBodyLimit,
        max_body_bytes=config.max_body_bytes,
        body_timeout=config.server.body_timeout,
        on_request=pacer.request,
    )
    # Outermost: every response gets them, error pages and 404s included.
    app.add_middleware(SecurityHeaders, frame_ancestors=config.frame_ancestors)
    install_error_handlers(app)
    install_docs(app)
    # The export route first: /v1/events/export is not an event id.
    routes = (
        export,
        events,
        actions,
        workos,
        integrity,
        stats,
        live,
        models,
        deadletters,
        reports,
        retention,
        erasure,
        streams,
        health,
        embed,
    )
    for module in routes:
        app.include_router(module.router, responses={} if module is health else LIMITED)
    app.mount("/assets", StaticFiles(directory=str(STATIC)), name="assets")

    @app.get("/", include_in_schema=False)
    def viewer() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    @app.get("/embed/{token_id}", include_in_schema=False)
    def embedded_viewer(token_id: Annotated[str, Path(max_length=32)]) -> HTMLResponse:
        html = (STATIC / "index.html").read_text(encoding="utf-8")
        return embed.embed_page(app.state.services, token_id, html)

    built_for: list[object] = [None]  # the data actions the document was built with

    def openapi() -> dict[str, Any]:
        actions = data_actions_key(audit.registry)
        if not app.openapi_schema or built_for[0] != actions:
            app.openapi_schema = build_openapi(
                app, audit.registry, audit.read_models, config.max_batch
            )
            built_for[0] = actions
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
