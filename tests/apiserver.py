"""A real HTTP server (uvicorn, configured as `auditcore serve` does) around the ASGI app, in a
thread of the test process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TypeVar

import uvicorn
from fastapi import FastAPI

from auditcore.api.server import server_config

T = TypeVar("T")


class ServerThread:
    def __init__(self, app: FastAPI) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        # The server exactly as `auditcore serve` configures it (timeouts, connection limit).
        timeouts = app.state.services.config.server
        self.server = uvicorn.Server(
            server_config(app, "127.0.0.1", self.port, timeouts, log_level="warning")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def eventually(check: Callable[[], T | None], timeout: float = 15.0) -> T:
    """The first truthy result of ``check``, retried until ``timeout`` (projection is async)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still {result!r} after {timeout}s")
        time.sleep(0.05)
