"""One owner of the embedded engine, many clients: the owner serves its chDB engine locally.

chDB lets one process open a directory. The process that holds it for long (``auditcore
serve``, ``auditcore project --follow``) runs an ``EngineEndpoint``: an HTTP listener on
127.0.0.1 (a free port) that runs statements on its engine for a caller presenting the owner's
credential. Where it listens and the credential go into ``owner.json`` inside the chDB
directory, created readable and writable by the owner's user only (0600). Any other process
that finds the file, and finds its owner answering, runs its statements through the owner
(``auditcore.clickhouse.remote``) instead of opening the directory: a user never meets
chDB's lock.

The protocol is one statement per request, on a new connection: ``POST /statement`` with
``Authorization: Bearer <token>`` and a body of one JSON line (``format``, ``params``,
``database``, ``settings``) followed by the statement's text. The answer is 200 with the
result in that format (``X-Rows-Read`` and ``X-Bytes-Read`` give the engine's counts), 400
with the engine's error text, or 401 without the credential. ``GET /ping`` with the
credential answers 200. ``POST /command`` with the credential and a JSON body (a client's
command line and terminal) is answered by the owner's command handler, if it has one: 200 with
a JSON body (exit status, stdout, stderr), or 409 when it declines (the client then runs the
command itself).

Failure semantics: each statement runs on a fresh handle of the owner's engine (its settings
and database applied first, as clickhouse-connect's chDB backend applies them), so callers
share no session state, and a statement that fails changes nothing but what the engine did.
The credential is compared in constant time; it grants no more than reading the chDB
directory would (the file lies in it). The file is removed when the endpoint stops; one left
by an owner killed outright names a process that is gone (or a port nobody answers), and
clients then open the engine themselves.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditcore.clickhouse.connection import ClickHouseTarget

CommandHandler = Callable[[dict[str, Any]], dict[str, Any] | None]
"""Answers a client's command line (``POST /command``): a JSON-able answer, or None to decline."""

OWNER_FILE = "owner.json"
_SETTING = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")

_owning: set[Path] = set()
"""chDB directories this process opens itself, whatever an owner file says: it owns them."""


@dataclass(frozen=True)
class OwnerRecord:
    """What ``owner.json`` holds: who owns the engine and how to reach it."""

    pid: int
    port: int
    token: str
    command: str

    def describe(self) -> str:
        return f"`auditcore {self.command}` (pid {self.pid})"


def owner_file(chdb_path: Path) -> Path:
    return chdb_path / OWNER_FILE


def claim(chdb_path: Path) -> None:
    """This process will own ``chdb_path``: it opens the engine itself, never through another."""
    _owning.add(chdb_path)


def claimed(chdb_path: Path) -> bool:
    return chdb_path in _owning


def read_owner(chdb_path: Path) -> OwnerRecord | None:
    """The live owner recorded for ``chdb_path``, or None: no file, a file not private to this
    user (it may have been planted or loosened: not trusted), unreadable, or its process gone."""
    path = owner_file(chdb_path)
    try:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None
        record = OwnerRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if record.pid == os.getpid() or not _alive(record.pid):
        return None
    return record


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process reusing the pid: not our owner
        return False
    return True


class EngineEndpoint:
    """Serves this process's embedded engine at ``chdb_path`` to other local processes.

    Start it only in a process that has the engine open (it runs statements on it)."""

    def __init__(
        self, chdb_path: Path, command: str, commands: CommandHandler | None = None
    ) -> None:
        self.chdb_path = chdb_path
        self.commands = commands
        self.record = OwnerRecord(
            pid=os.getpid(), port=0, token=secrets.token_urlsafe(32), command=command
        )
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EngineEndpoint:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        handler = type("Handler", (_Handler,), {"endpoint": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        self.record = OwnerRecord(
            pid=self.record.pid,
            port=server.server_address[1],
            token=self.record.token,
            command=self.record.command,
        )
        self._thread = threading.Thread(
            target=server.serve_forever, name="auditcore-engine-endpoint", daemon=True
        )
        self._thread.start()
        _write_private(owner_file(self.chdb_path), json.dumps(asdict(self.record)))

    def stop(self) -> None:
        path = owner_file(self.chdb_path)
        try:  # only our own record: a later owner may have replaced it
            if json.loads(path.read_text(encoding="utf-8")).get("token") == self.record.token:
                path.unlink()
        except (OSError, ValueError):
            pass
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def authorised(self, header: str | None) -> bool:
        expected = f"Bearer {self.record.token}".encode()
        return hmac.compare_digest((header or "").encode(), expected)

    def run(self, sql: bytes, head: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
        """Run one statement on a fresh handle of this process's engine."""
        import chdb  # noqa: PLC0415 - only the owner runs statements; it has chdb loaded

        connection = chdb.connect(str(self.chdb_path))  # type: ignore[no-untyped-call]
        try:
            for name, value in dict(head.get("settings") or {}).items():
                if not name or set(name) - _SETTING:
                    raise ValueError(f"Code: 115. DB::Exception: Unknown setting '{name}'")
                connection.query(f"SET {name} = {_quote(str(value))}", "TabSeparated")
            if head.get("database"):
                database = str(head["database"]).replace("`", "``")
                connection.query(f"USE `{database}`", "TabSeparated")
            result = connection.query(sql, str(head["format"]), params=head.get("params") or {})
            counts = {
                "X-Rows-Read": str(result.rows_read()),
                "X-Bytes-Read": str(result.bytes_read()),
            }
            return result.bytes() or b"", counts
        finally:
            connection.close()


class _Handler(BaseHTTPRequestHandler):
    endpoint: EngineEndpoint
    protocol_version = "HTTP/1.0"  # one statement per connection

    def log_message(self, format: str, *args: Any) -> None:  # no access log
        pass

    def do_GET(self) -> None:
        if not self.endpoint.authorised(self.headers.get("Authorization")):
            return self._reply(401, b"a credential is required")
        if self.path != "/ping":
            return self._reply(404, b"no such path")
        self._reply(200, b"ok")

    def do_POST(self) -> None:
        if not self.endpoint.authorised(self.headers.get("Authorization")):
            return self._reply(401, b"a credential is required")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/command":
            return self._command(body)
        if self.path != "/statement":
            return self._reply(404, b"no such path")
        head, _, sql = body.partition(b"\n")
        try:
            data, counts = self.endpoint.run(sql, json.loads(head))
        except Exception as error:  # the engine's own text, for the client to raise
            return self._reply(400, str(error).encode("utf-8", "replace"))
        self._reply(200, data, counts)

    def _command(self, body: bytes) -> None:
        handler = self.endpoint.commands
        try:
            answer = None if handler is None else handler(json.loads(body))
        except Exception:  # whatever went wrong, the client runs the command itself
            answer = None
        if answer is None:
            return self._reply(409, b"declined: run the command yourself")
        self._reply(200, json.dumps(answer).encode())

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {**(headers or {}), "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only, replacing it in one step."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    os.replace(temporary, path)


@contextmanager
def own_engine(
    target: ClickHouseTarget,
    open_engine: Callable[[], object],
    command: str,
    commands: CommandHandler | None = None,
) -> Iterator[None]:
    """While the block runs, this process owns the embedded engine (``open_engine`` opens it
    here, whatever another process serves) and serves it to other local processes (and
    answers their command lines with ``commands``). On a ClickHouse server there is nothing
    to own, and nothing is opened."""
    if not target.embedded:
        yield
        return
    claim(target.chdb_path)
    open_engine()
    with _terminate_unwinds(), EngineEndpoint(target.chdb_path, command, commands):
        yield


@contextmanager
def _terminate_unwinds() -> Iterator[None]:
    """SIGTERM (how systemd, Docker and ``kill`` stop a process) unwinds the owner like
    Ctrl-C does, so its ``owner.json`` goes with it. Its default action ends the process on
    the spot: uvicorn, having shut down, raises the signal again with that action in place."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is not signal.SIG_DFL:
        yield  # someone already decided what SIGTERM does here
        return
    signal.signal(signal.SIGTERM, _exit_on_terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)
