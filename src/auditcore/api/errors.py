"""Every failure as a JSON body that says what is wrong and where: never a stack trace.

{"error": {"type": "invalid_event", "message": "...", "request_id": "...",
           "problems": [{"location": "body[2].metadata.severity", "message": "..."}]}}
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from clickhouse_connect.driver.exceptions import DatabaseError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from auditcore.errors import (
    ConflictError,
    EventIdReusedError,
    InvalidEventError,
    InvalidQueryError,
    NotEntitledError,
    NotFoundError,
)

logger = logging.getLogger(__name__)


ERROR_BODY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": ["string", "null"]},
                "problems": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "location": {"type": "string"},
                            "message": {"type": "string"},
                            "index": {
                                "type": "integer",
                                "description": "In a batch: the event's index in it.",
                            },
                        },
                        "required": ["location", "message"],
                    },
                },
            },
            "required": ["type", "message", "request_id"],
        }
    },
    "required": ["error"],
}
"""The JSON Schema of every error body (``Error`` in the OpenAPI document)."""


class ApiError(Exception):
    """A refusal the API itself decides on (authentication, scope, size)."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        problems: Sequence[tuple[str, str]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.problems = list(problems)
        self.headers = headers


def error_response(
    request: Request,
    status: int,
    kind: str,
    message: str,
    problems: Sequence[tuple[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": kind,
        "message": message,
        "request_id": getattr(request.state, "request_id", None),
    }
    if problems:
        body["problems"] = [_problem(where, what) for where, what in problems]
    return JSONResponse({"error": body}, status_code=status, headers=headers)


def _problem(where: str, what: str) -> dict[str, Any]:
    """A problem as the error body lists it; one in a batch's event says which (``index``)."""
    found = _BATCH_INDEX.match(where)
    problem: dict[str, Any] = {"location": where, "message": what}
    if found:
        problem["index"] = int(found.group(1))
    return problem


_BATCH_INDEX = re.compile(r"body(?:\.event)?\[(\d+)\]")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return error_response(
            request, error.status, error.kind, error.message, error.problems, error.headers
        )

    @app.exception_handler(InvalidQueryError)
    async def invalid_query(request: Request, error: InvalidQueryError) -> JSONResponse:
        return error_response(
            request, 400, "invalid_query", str(error), [(f"query.{error.parameter}", str(error))]
        )

    @app.exception_handler(InvalidEventError)
    async def invalid_event(request: Request, error: InvalidEventError) -> JSONResponse:
        return error_response(request, 422, "invalid_event", str(error), error.problems)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, error: NotFoundError) -> JSONResponse:
        return error_response(request, 404, "not_found", str(error))

    @app.exception_handler(NotEntitledError)
    async def not_entitled(request: Request, error: NotEntitledError) -> JSONResponse:
        return error_response(request, 403, "not_entitled", str(error))

    @app.exception_handler(EventIdReusedError)
    async def reused(request: Request, error: EventIdReusedError) -> JSONResponse:
        return error_response(request, 409, "event_id_reused", str(error))

    @app.exception_handler(ConflictError)
    async def conflict(request: Request, error: ConflictError) -> JSONResponse:
        return error_response(request, 409, "conflict", str(error))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            (_location(detail["loc"]), detail["msg"].removeprefix("Value error, "))
            for detail in error.errors()
        ]
        return error_response(request, 400, "invalid_request", "the request is not valid", problems)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        kind = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        detail = str(error.detail)
        if error.status_code == 400:
            # FastAPI's only 400: a body it could not read as JSON at all (not UTF-8, or
            # nested past the parser's depth); malformed JSON comes as a validation error.
            kind, detail = "invalid_json", "the body is not valid JSON (not UTF-8, or too deep)"
        headers = error.headers
        if error.status_code == 405:
            given = (headers or {}).get("Allow", "")
            headers = {**(headers or {}), "Allow": _allowed(app, request, given)}
        return error_response(request, error.status_code, kind, detail, headers=headers)

    @app.exception_handler(DatabaseError)
    async def clickhouse_error(request: Request, error: DatabaseError) -> JSONResponse:
        refusal = _limit_refusal(error)
        if refusal is None:
            return await unexpected(request, error)
        status, kind, message = refusal
        headers = {"Retry-After": "5"} if status == 503 else None
        return error_response(request, status, kind, message, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        logger.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(
            request,
            500,
            "internal_error",
            "the server failed to answer; the request id identifies it in the server's log",
        )


# ClickHouse's error codes for a query stopped by one of the server's per-request limits.
_TOO_BROAD = {158, 307, 396}  # TOO_MANY_ROWS, TOO_MANY_BYTES, TOO_MANY_ROWS_OR_BYTES
_TOO_SLOW = {159, 160}  # TIMEOUT_EXCEEDED, TOO_SLOW
_TOO_HEAVY = {241}  # MEMORY_LIMIT_EXCEEDED


def _limit_refusal(error: DatabaseError) -> tuple[int, str, str] | None:
    """A query stopped by a per-request limit as (status, type, message); None otherwise."""
    code = getattr(error, "code", None)
    if code in _TOO_BROAD:
        return (
            400,
            "query_too_broad",
            "the answer has more rows than this server returns for one request; narrow it "
            "(a shorter time range, a coarser interval, more filters)",
        )
    if code in _TOO_SLOW:
        return (
            503,
            "query_timeout",
            "the query ran past this server's time limit; narrow it (a shorter time range, "
            "more filters) or retry later",
        )
    if code in _TOO_HEAVY:
        return (
            503,
            "query_too_heavy",
            "the query needed more memory than this server allows one request; narrow it "
            "or retry later",
        )
    return None


def _allowed(app: FastAPI, request: Request, fallback: str) -> str:
    """Every documented method of this path (Starlette names only the first matching route's,
    and ``GET`` and ``POST /v1/events`` are two routes). ``HEAD`` is not among them: the
    routes answer it with 405, so ``Allow`` must not name it."""
    path = request.url.path
    for template, operations in app.openapi()["paths"].items():
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            methods = {method.upper() for method in operations}
            return ", ".join(sorted(methods))
    return fallback


def _location(parts: Sequence[int | str]) -> str:
    location = ""
    for part in parts:
        location += f"[{part}]" if isinstance(part, int) else f".{part}"
    return location.lstrip(".")
