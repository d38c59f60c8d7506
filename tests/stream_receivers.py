"""What the stream destination tests deliver to and with: batches of events, a real HTTP
receiver (a threading HTTP server on a free port, answering as the test scripts it), a port
that refuses connections and one that accepts and never answers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from auditcore.streams.base import Batch, StreamEvent

HOSTILE = "Zoë 東京 🔥 \u202e\u0000 \"'\\ <script> Ω\ud7ff\U0010fffd"


def make_batch(
    positions: range,
    *,
    workspace_id: str = "acme",
    stream_id: str = "stream-1",
    batch_id: str | None = None,
    text: str = HOSTILE,
    occurred_at: datetime = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC),
) -> Batch:
    """Consecutive events at ``positions``, each a payload carrying its position and ``text``."""
    events = [
        StreamEvent(
            position=position,
            delivery_id=f"{stream_id}:{position}",
            workspace_id=workspace_id,
            occurred_at=occurred_at + timedelta(microseconds=position),
            payload={"position": position, "text": text, "nested": {"list": [1, 2.5, None]}},
        )
        for position in positions
    ]
    return Batch(
        stream_id=stream_id,
        workspace_id=workspace_id,
        batch_id=batch_id or f"{stream_id}-{positions.start}-{positions.stop - 1}",
        events=events,
    )


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    answer: tuple[int, bytes]


@dataclass
class Receiver:
    """An HTTP server that records each POST and answers the next scripted answer (``success``
    once the script is used up)."""

    url: str
    requests: list[Received] = field(default_factory=list)
    script: list[tuple[int, bytes]] = field(default_factory=list)
    success: tuple[int, bytes] = (200, b'{"text":"Success","code":0}')
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self) -> tuple[int, bytes]:
        with self.lock:
            return self.script.pop(0) if self.script else self.success


@contextmanager
def http_receiver() -> Iterator[Receiver]:
    receiver: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            if receiver.delay:
                time.sleep(receiver.delay)
            status, answer = receiver.answer()
            with receiver.lock:
                receiver.requests.append(
                    Received(self.path, dict(self.headers), body, status, (status, answer))
                )
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet: the tests read what was received, not the server's log."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def refused_port() -> int:
    """A port on which nothing listens (just released by the kernel)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]
