"""The HTTP server (uvicorn) as auditcore runs it: timeouts for connections that hold a slot
and send nothing, and a connection limit.

Over the limit, a request gets a 503 like every other refusal: JSON, ``Retry-After`` and the
security headers (uvicorn's own is a bare ``text/plain`` page).

uvicorn closes a connection idle *between* requests (``timeout_keep_alive``), but not one that
never sends its first request, nor one that sends half a request head and stops: each holds a
connection slot for as long as the client likes. ``GuardedH11Protocol`` adds both deadlines.
Body reads are bounded in the ASGI middleware (``body_timeout``), where the app's own pace of
reading cannot be mistaken for the client's.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import Any

import h11
import orjson
import uvicorn
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from auditcore.api.config import ServerTimeouts
from auditcore.api.headers import content_security_policy
from auditcore.errors import ConfigurationError

_BUSY = orjson.dumps(
    {
        "error": {
            "type": "too_many_connections",
            "message": "the server holds as many connections as it allows: retry shortly",
            "request_id": None,
        }
    }
)
_BUSY_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BUSY)).encode()),
    (b"retry-after", b"1"),
    (b"connection", b"close"),
    (b"content-security-policy", content_security_policy("'none'").encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 503, "headers": _BUSY_HEADERS})
    await send({"type": "http.response.body", "body": _BUSY})


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus: a new connection is closed if it sends nothing for
    ``timeout_keep_alive`` seconds, and any connection whose request head is not complete
    ``header_timeout`` seconds after it was awaited (connection open, or previous response
    sent) is closed."""

    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        # uvicorn's own check answers with its bare page: the same check, our answer.
        self._limit, self.limit_concurrency = self.limit_concurrency, None
        self._app, self.app = self.app, self._admitted

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, or the 503 when the connections or requests are at the limit (counted as
        uvicorn counts them, but this request's task is already among the tasks)."""
        limit = self._limit
        if limit is not None and (len(self.connections) >= limit or len(self.tasks) > limit):
            await _busy(scope, receive, send)
        else:
            await self._app(scope, receive, send)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_arrived()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._head_arrived()

    def on_response_complete(self) -> None:
        # Armed first: a pipelined request handled inside disarms it again.
        self._await_head()
        super().on_response_complete()

    def _await_head(self) -> None:
        self._head_arrived()
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_late)

    def _head_arrived(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_late(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def server_config(
    app: Any, host: str, port: int, timeouts: ServerTimeouts, log_level: str = "info"
) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` under these timeouts and connection limit."""
    protocol = type(
        "GuardedH11Protocol", (GuardedH11Protocol,), {"header_timeout": timeouts.header_timeout}
    )
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol,
        timeout_keep_alive=timeouts.keepalive_timeout,  # type: ignore[arg-type]
        limit_concurrency=timeouts.max_connections or None,
        # auditcore decides whom to believe about X-Forwarded-For (--trusted-proxy);
        # uvicorn's own handling would trust 127.0.0.1 behind our back.
        proxy_headers=False,
        log_level=log_level,
    )


def listening_socket(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything else is opened, so a port in use is a
    one-line ``ConfigurationError`` (the CLI exits 2), not uvicorn's log and exit status."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as error:
        raise ConfigurationError(f"cannot listen on {host!r}: {error.strerror}") from error
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on connections of such a socket, and
    # without it every response waits out the client's delayed ACK (40 ms a request).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {port} on {host} is already in use (another `auditcore serve`?): stop "
                "that process or choose another port with --port"
            ) from error
        raise ConfigurationError(f"cannot listen on {host}:{port}: {error.strerror}") from error
    return sock
