"""The HTTP server's own guards (as `auditcore serve` runs it): an idle connection, a request
head or body that stops halfway, and too many connections at once are all let go of within the
configured time, over raw sockets (HTTP clients will not misbehave on purpose)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.api.config import ServerTimeouts
from auditcore.api.server import listening_socket
from tests.cli_run import AUDITCORE
from tests.test_api import Deployment, deploy

TIMEOUTS = ServerTimeouts(
    header_timeout=1.5, body_timeout=1.5, keepalive_timeout=1.0, max_connections=8
)
SLACK = 1.5
"""Seconds allowed beyond a timeout before the test calls it missed (a loaded CI machine)."""


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Deployment]:
    yield from deploy(pg_settings, ApiConfig(run_processors=False, server=TIMEOUTS))


def _connect(api: Deployment) -> socket.socket:
    host, port = api.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def _closed_after(connection: socket.socket) -> tuple[float, bytes]:
    """Seconds until the server closes the connection, and what it sent before."""
    started, received = time.monotonic(), b""
    with connection:
        while chunk := connection.recv(65536):
            received += chunk
    return time.monotonic() - started, received


def _response(connection: socket.socket) -> bytes:
    """One whole response (head and ``Content-Length`` body), however TCP splits it."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += connection.recv(65536)
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(api: Deployment) -> None:
    seconds, received = _closed_after(_connect(api))
    assert received == b""
    assert TIMEOUTS.keepalive_timeout - 0.2 <= seconds <= TIMEOUTS.keepalive_timeout + SLACK


def test_an_idle_connection_after_a_response_is_closed_too(api: Deployment) -> None:
    connection = _connect(api)
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    seconds, received = _closed_after(connection)
    assert received.startswith(b"HTTP/1.1 200")
    assert seconds <= TIMEOUTS.keepalive_timeout + SLACK


@pytest.mark.parametrize("second_request", [False, True])
def test_a_request_head_that_stops_halfway_is_closed_after_the_header_timeout(
    api: Deployment, second_request: bool
) -> None:
    """Also on a kept-alive connection, for its second request."""
    connection = _connect(api)
    if second_request:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _response(connection).startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    # Trickling bytes does not keep it open: the deadline is for the whole head.
    for _ in range(3):
        time.sleep(0.4)
        connection.sendall(b"X-Slow: 1\r\n")
    _, received = _closed_after(connection)
    seconds = time.monotonic() - started
    assert received == b""
    assert TIMEOUTS.header_timeout - 0.2 <= seconds <= TIMEOUTS.header_timeout + SLACK


def test_a_body_that_stops_halfway_gets_408_after_the_body_timeout(api: Deployment) -> None:
    connection = _connect(api)
    connection.sendall(
        b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
        + f"Authorization: Bearer {api.keys['acme']}\r\n".encode()
        + b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"action": '
    )
    seconds, received = _closed_after(connection)
    assert received.startswith(b"HTTP/1.1 408"), received
    assert b'"body_timeout"' in received
    assert TIMEOUTS.body_timeout - 0.2 <= seconds <= TIMEOUTS.body_timeout + SLACK


def test_connections_beyond_the_limit_get_503_and_the_server_recovers(api: Deployment) -> None:
    held = [_connect(api) for _ in range(TIMEOUTS.max_connections)]
    time.sleep(0.2)
    extra = _connect(api)
    extra.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    refused = b""
    while chunk := extra.recv(65536):  # The server closes the connection after it.
        refused += chunk
    assert refused.startswith(b"HTTP/1.1 503")
    # A refusal like every other: JSON that says what to do, and the security headers.
    head, _, body = refused.partition(b"\r\n\r\n")
    headers = head.lower()
    for header in (b"retry-after: 1", b"content-type: application/json", b"nosniff"):
        assert header in headers, head
    assert b"content-security-policy: default-src 'none'" in headers
    assert json.loads(body)["error"]["type"] == "too_many_connections"
    extra.close()
    for connection in held:
        connection.close()
    time.sleep(0.2)
    again = _connect(api)
    again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert again.recv(65536).startswith(b"HTTP/1.1 200")
    again.close()


def test_a_switch_interval_of_zero_is_a_usage_error() -> None:
    """Python refuses it with a ValueError; the command line says what to give instead."""
    result = subprocess.run(
        [AUDITCORE, "serve", "--switch-interval", "0"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "above 0" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_connections_of_the_served_socket_send_without_delay() -> None:
    """A response written in two pieces on a socket with Nagle's algorithm on waits for the
    client's delayed ACK: 40 ms on every request (seen: /healthz at 44 ms). asyncio turns it
    off only on connections of a socket that names TCP as its protocol."""

    async def accepted_nodelay() -> int:
        sock = listening_socket("127.0.0.1", 0)
        port = sock.getsockname()[1]
        flags: list[int] = []

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            raw = writer.get_extra_info("socket")
            flags.append(raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            while not flags:
                await asyncio.sleep(0.01)
            writer.close()
        return flags[0]

    assert asyncio.run(accepted_nodelay()) != 0
