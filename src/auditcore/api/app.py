"""The HTTP service: ``create_app`` wires the routes, errors, viewer and background work."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import TypeAdapter

from auditcore.api.config import ApiConfig
from auditcore.api.deps import Services
from auditcore.api.errors import install_error_handlers
from auditcore.api.limits import LIMITED, RequestGuard
from auditcore.api.live import LiveHub
from auditcore.api.middleware import RequestIdAndBodyLimit
from auditcore.api.pacing import CpuPacer
from auditcore.api.routes import (
    deadletters,
    events,
    export,
    health,
    integrity,
    live,
    models,
    reports,
    stats,
)
from auditcore.api.schemas import EventIn
from auditcore.api.sessions import SessionKind, Sessions
from auditcore.facade import AuditCore
from auditcore.tenancy.directory import Directory

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
        sessions.start()
        try:
            yield
        finally:
            sessions.stop()
            hub.close()
            stop.set()
            for thread in threads:
                thread.join(timeout=10)

    app = FastAPI(
        title="auditcore",
        summary="Who did what, when: record audit events and ask them back.",
        version="1",
        lifespan=lifespan,
    )
    app.state.services = Services(
        audit, directory, hub, config, RequestGuard(limits), sessions, pacer
    )
    app.add_middleware(
        RequestIdAndBodyLimit,
        max_body_bytes=config.max_body_bytes,
        body_timeout=config.server.body_timeout,
        on_request=pacer.request,
    )
    install_error_handlers(app)
    # The export route first: /v1/events/export is not an event id.
    for module in (export, events, integrity, stats, live, models, deadletters, reports, health):
        app.include_router(module.router, responses={} if module is health else LIMITED)
    app.mount("/assets", StaticFiles(directory=str(STATIC)), name="assets")

    @app.get("/", include_in_schema=False)
    def viewer() -> HTMLResponse:
        return HTMLResponse((STATIC / "index.html").read_text(encoding="utf-8"))

    app.openapi = lambda: _openapi(app, audit)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI, audit: AuditCore) -> dict[str, Any]:
    """FastAPI's schema, plus the read models' filters as query parameters (they are read
    from the registry at run time, so FastAPI cannot see them) and the event body schema."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = TypeAdapter(EventIn).json_schema(ref_template="#/components/schemas/{model}")
    components.update(body.pop("$defs", {}))
    components["EventIn"] = body
    for path in schema["paths"].values():
        for operation in path.values():
            model_name = operation.pop("x-filters-from", None)
            if model_name is None:
                continue
            model = audit.read_models.get(model_name)
            operation.setdefault("parameters", []).extend(
                {
                    "name": declared.name,
                    "in": "query",
                    "required": False,
                    "description": (declared.help or declared.name)
                    + " (repeat for any of several values)",
                    "schema": {"type": "array", "items": {"type": "string"}},
                    "style": "form",
                    "explode": True,
                }
                for declared in model.filters
            )
    app.openapi_schema = schema
    return schema
