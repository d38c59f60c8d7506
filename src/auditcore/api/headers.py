"""Security headers on every response: a Content-Security-Policy without ``unsafe-inline``
(scripts and styles come from this server's own files; a report's one inline stylesheet is
allowed by its hash), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``,
and ``frame-ancestors`` from the configuration (``'none'`` unless embedding is allowed).

Failure semantics: none; headers a route set itself (a report's own policy) are kept.
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_FRAME_ANCESTOR = re.compile(r"'none'|'self'|(https?://)?[A-Za-z0-9.*-]+(:[0-9*]+)?")


def content_security_policy(frame_ancestors: str, styles: tuple[str, ...] = ()) -> str:
    """The policy: only this origin's scripts, styles, images and connections; ``styles``
    are the exact texts of inline ``<style>`` elements to allow (by SHA-256)."""
    hashes = "".join(f" 'sha256-{_digest(style)}'" for style in styles)
    return (
        "default-src 'none'; script-src 'self'; "
        f"style-src 'self'{hashes}; img-src 'self' data:; font-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; "
        f"frame-ancestors {frame_ancestors}"
    )


def checked_frame_ancestors(value: str) -> str:
    """``'none'``, ``'self'`` or origins such as ``https://intranet.example.com`` (spaces
    between); ValueError for anything else (a stray ``;`` would change the whole policy)."""
    sources = value.split()
    if not sources or not all(_FRAME_ANCESTOR.fullmatch(source) for source in sources):
        raise ValueError(
            f"frame-ancestors {value!r}: give 'none', 'self' or origins such as "
            "https://intranet.example.com, separated by spaces"
        )
    return " ".join(sources)


def _digest(text: str) -> str:
    return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


class SecurityHeaders:
    """Adds the headers to every HTTP response that does not set them itself."""

    def __init__(self, app: ASGIApp, frame_ancestors: str) -> None:
        self.app = app
        self.headers = {
            "Content-Security-Policy": content_security_policy(frame_ancestors),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
