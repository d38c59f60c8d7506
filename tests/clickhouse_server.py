"""The ClickHouse server the tests run against: ``../shared/tools/chdb_http_server.py``, a
stand-in for a ClickHouse server's HTTP interface backed by chDB (the real engine), started on
a free port. It can be stopped and restarted on the same port and data (a server outage), and
logs every statement it is sent to ``log_path`` (``--log``).

Absent (a clone without ``../shared``), ``STAND_IN.exists()`` is false and the fixtures using it
skip with that reason; CI always has it.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

STAND_IN = (
    Path(__file__).resolve().parent.parent.parent / "shared" / "tools" / "chdb_http_server.py"
)
MISSING = f"the ClickHouse server stand-in is not at {STAND_IN} (a clone without ../shared)"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ClickHouseStandIn:
    """One stand-in process on ``directory`` (its chDB data and its log)."""

    def __init__(
        self,
        directory: Path,
        *,
        port: int | None = None,
        password: str = "",
        timezone: str | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        self.timezone = timezone
        """The server's own time zone (its ``timezone()``), when not the machine's."""
        self.log_path = directory / "statements.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def url(self, database: str, *, scheme: str = "http", credentials: str = "default:") -> str:
        return f"{scheme}://{credentials}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until it answers ``/ping``."""
        assert not self.running, "the stand-in is already running"
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [
                sys.executable,
                str(STAND_IN),
                "--port",
                str(self.port),
                "--path",
                str(self.directory / "data"),
                "--log",
                *(["--password", self.password] if self.password else []),
                *(["--timezone", self.timezone] if self.timezone else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self._process.poll() is not None:
                raise RuntimeError(f"the stand-in exited: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the stand-in did not answer within {timeout}s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL): every connection to it is refused until ``start``."""
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_tail(self, size: int = 4000) -> str:
        return self.log_path.read_bytes()[-size:].decode("utf-8", "replace")

    def _answers(self) -> bool:
        ping = f"http://127.0.0.1:{self.port}/ping"
        with contextlib.suppress(OSError), urllib.request.urlopen(ping, timeout=1) as reply:
            return bool(reply.status == 200)
        return False
