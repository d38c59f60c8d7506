"""ASGI middleware: a request id on every request and response, a cap on body size, and a
deadline for each piece of the body (a client that stops sending mid-body gets a 408)."""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from auditcore.api.errors import ApiError

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class RequestIdAndBodyLimit:
    """Takes the caller's ``X-Request-ID`` when it is sane (else makes one), echoes it back,
    refuses bodies over ``max_body_bytes`` (413) whether or not they declare a length, and
    bodies whose next piece takes more than ``body_timeout`` seconds to arrive (408)."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        body_timeout: float = 30.0,
        on_request: Callable[[], None] | None = None,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.on_request = on_request

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.on_request is not None:
            self.on_request()
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else f"req_{secrets.token_hex(8)}"
        scope.setdefault("state", {})["request_id"] = request_id
        limit = self.max_body_bytes
        declared = headers.get(b"content-length")
        too_large = ApiError(
            413,
            "body_too_large",
            f"the request body is larger than {limit} bytes; send fewer events per request",
        )
        if declared is not None and declared.isdigit() and int(declared) > limit:
            receive = _refuse(too_large)
        else:
            receive = _counted(receive, limit, too_large, self.body_timeout)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


def _refuse(error: ApiError) -> Receive:
    async def receive() -> Message:
        raise error

    return receive


def _counted(receive: Receive, limit: int, error: ApiError, timeout: float) -> Receive:
    seen = 0
    complete = False

    async def counted() -> Message:
        nonlocal seen, complete
        if complete or timeout <= 0:
            # After the body only a disconnect can come, whenever it comes (a live tail).
            message = await receive()
        else:
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise ApiError(
                    408,
                    "body_timeout",
                    f"the request body stopped arriving for {timeout:g} s; send it whole",
                    headers={"Connection": "close"},
                ) from None
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if seen > limit:
                raise error
        return message

    return counted
