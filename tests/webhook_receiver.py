"""A real webhook receiver for the log-stream tests: an HTTP server on 127.0.0.1 (in a thread)
that verifies each request's Standard Webhooks signature with the ``standardwebhooks``
package, records what it accepted, and answers as the test tells it (``plan``): 200, another
status, an answer slower than the sender waits, or a slow but timely one."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # base64 of 24 bytes: a test secret


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay: float = 0.0
    """Seconds to wait before answering (longer than the sender's timeout: a time-out)."""


OK = Answer()


@dataclass
class Received:
    webhook_id: str
    body: dict[str, Any]
    headers: dict[str, str]
    accepted: bool
    """Answered 2xx (the sender may treat it as delivered)."""


@dataclass
class Receiver:
    secret: str = SECRET
    plan: Callable[[int], Answer] = lambda _: OK
    """The answer to the n-th request (from 0)."""
    requests: list[Received] = field(default_factory=list)
    bad_signatures: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def accepted(self) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.accepted]

    def events(self) -> list[dict[str, Any]]:
        """Every accepted event, in arrival order (duplicates kept)."""
        return [e for r in self.accepted for e in r.body["events"]]

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                except WebhookVerificationError:
                    with receiver._lock:
                        receiver.bad_signatures += 1
                    self._answer(400)
                    return
                with receiver._lock:
                    index = len(receiver.requests)
                    answer = receiver.plan(index)
                    record = Received(headers["webhook-id"], orjson.loads(body), headers, False)
                    receiver.requests.append(record)
                if answer.delay:
                    time.sleep(answer.delay)
                record.accepted = 200 <= answer.status < 300
                self._answer(answer.status)

            def _answer(self, status: int) -> None:
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *_: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
