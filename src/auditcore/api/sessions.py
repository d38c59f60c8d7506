"""Long requests (live streams, exports, reports, and event-recording requests whose bodies may
arrive slowly): how many one workspace may hold at once, and ending them when their key is
revoked.

A key is checked on every request, so a revoked key cannot start anything; but a live stream or
an export outlives the request that started it. ``Sessions`` remembers each one with its key,
and a watcher thread asks the directory every ``check_interval`` seconds which of those keys
have been revoked (by any process: the CLI revokes in the database) and ends their sessions.

Failure semantics: ending a session is immediate for its producer (the live watcher or the
export's thread stops) and at most ``grace`` seconds later for the connection, which is cut
even if the client has stopped reading (a blocked write does not keep it open). An export that
is cut never ends cleanly: its client sees a truncated body, never a shorter "complete" file.
If the directory cannot be reached, the check is retried at the next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterable, Callable, Mapping
from enum import StrEnum

import anyio
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from auditcore.api.errors import ApiError
from auditcore.tenancy.directory import Directory, Principal

logger = logging.getLogger(__name__)

KEY_REVOKED = "key_revoked"


class SessionKind(StrEnum):
    WRITE = "write"
    """A ``POST /v1/events``, from its first byte of body to its answer: a body trickled in
    slowly holds a connection, so one workspace may hold only so many."""
    EXPORT = "export"
    REPORT = "report"
    LIVE = "live"


class Session:
    """One long request of one key. ``end`` may be called from any thread, once or more."""

    def __init__(self, owner: Sessions, kind: SessionKind, principal: Principal) -> None:
        self.owner = owner
        self.kind = kind
        self.workspace_id = principal.workspace_id
        self.key_id = principal.key_id
        self.ended: str | None = None
        self._lock = threading.Lock()
        self._on_end: list[Callable[[str], None]] = []

    def on_end(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` when the session is ended (now, if it already was)."""
        with self._lock:
            if self.ended is None:
                self._on_end.append(callback)
                return
        callback(self.ended)

    def end(self, reason: str) -> None:
        with self._lock:
            if self.ended is not None:
                return
            self.ended = reason
            callbacks, self._on_end = self._on_end, []
        logger.info("ending the %s of key %s: %s", self.kind, self.key_id, reason)
        for callback in callbacks:
            callback(reason)

    def close(self) -> None:
        """The request is over: free its slot (idempotent)."""
        self.owner.release(self)


class Sessions:
    """The open sessions, at most ``limits[kind]`` per workspace (0: no limit)."""

    def __init__(
        self, directory: Directory, limits: Mapping[SessionKind, int], check_interval: float
    ) -> None:
        self.directory = directory
        self.limits = dict(limits)
        self.check_interval = check_interval
        self._lock = threading.Lock()
        self._open: set[Session] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self, kind: SessionKind, principal: Principal) -> Session:
        """A slot for a new session, or 429 if the workspace already holds its limit."""
        limit = self.limits.get(kind, 0)
        with self._lock:
            held = sum(
                1 for s in self._open if s.kind is kind and s.workspace_id == principal.workspace_id
            )
            if limit and held >= limit:
                raise ApiError(
                    429,
                    "too_many_concurrent",
                    f"this workspace already has {held} {kind.value} request(s) running, the "
                    f"most allowed at once; retry when one has finished",
                    headers={"Retry-After": "5"},
                )
            session = Session(self, kind, principal)
            self._open.add(session)
        return session

    def release(self, session: Session) -> None:
        with self._lock:
            self._open.discard(session)

    def counts(self) -> Counter[tuple[SessionKind, str]]:
        with self._lock:
            return Counter((s.kind, s.workspace_id) for s in self._open)

    def start(self) -> None:
        if self.check_interval > 0 and self._thread is None:
            self._thread = threading.Thread(
                target=self._watch, name="auditcore-revocations", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def end_revoked(self) -> int:
        """End every session whose key is revoked (or gone); how many were ended."""
        with self._lock:
            sessions = [s for s in self._open if s.ended is None]
        if not sessions:
            return 0
        revoked = self.directory.revoked_among({s.key_id for s in sessions})
        ended = [s for s in sessions if s.key_id in revoked]
        for session in ended:
            session.end(KEY_REVOKED)
        return len(ended)

    def _watch(self) -> None:
        while not self._stop.wait(self.check_interval):
            try:
                self.end_revoked()
            except Exception:
                logger.exception("could not check open sessions' keys; retrying")


class SessionResponse(StreamingResponse):
    """A streamed response that belongs to a session: when the session ends, the connection
    is closed ``grace`` seconds later at the latest (the body may end sooner by itself), and
    the session's slot is freed whenever and however the response finishes."""

    def __init__(
        self,
        content: AsyncIterable[str | bytes],
        session: Session,
        *,
        grace: float = 0.0,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(content, status_code, headers, media_type, background)
        self.session = session
        self.grace = grace

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        ended = asyncio.Event()
        self.session.on_end(lambda _: _call_soon(loop, ended.set))
        try:
            async with anyio.create_task_group() as group:

                async def cut() -> None:
                    await ended.wait()
                    await anyio.sleep(self.grace)
                    group.cancel_scope.cancel()

                group.start_soon(cut)
                await super().__call__(scope, receive, send)
                group.cancel_scope.cancel()
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                await close()
            self.session.close()


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> None:
    with contextlib.suppress(RuntimeError):  # A closed loop: the response is over anyway.
        loop.call_soon_threadsafe(callback)
