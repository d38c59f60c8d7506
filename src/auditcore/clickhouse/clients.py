"""One ClickHouse client per thread, opened on first use in the thread that runs the query.

A clickhouse-connect client must never run two queries at once: a server refuses a second
concurrent query in the same HTTP session, and chDB's handle is not thread-safe. Code that
may hop threads between taking a client and using it (FastAPI runs a dependency and its
endpoint on different worker threads; a streamed response's pages run wherever the thread
pool puts them) therefore holds a ``ThreadClients`` and calls it at each query, never a client.

Failure semantics: opening a client raises what ``connect`` raises (``ConfigurationError``
when the target cannot be reached), and the next call in that thread tries again. A client
is closed when its thread ends (its thread-local holder is collected) or on ``close()``.
"""

from __future__ import annotations

import threading
import weakref

from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.connection import ClickHouseTarget, connect


class _Holder:
    """What a thread's local storage keeps: collected when the thread ends."""

    def __init__(self, client: Client) -> None:
        self.client = client


class ThreadClients:
    """Call it for the current thread's client on ``target``."""

    def __init__(self, target: ClickHouseTarget) -> None:
        self.target = target
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: dict[int, Client] = {}

    def __call__(self) -> Client:
        holder: _Holder | None = getattr(self._local, "holder", None)
        if holder is None:
            client = connect(self.target)
            holder = _Holder(client)
            with self._lock:
                self._open[id(client)] = client
            # Runs when the thread's locals are dropped (the thread ended), or at close().
            weakref.finalize(holder, self._release, client)
            self._local.holder = holder
        return holder.client

    @property
    def open_clients(self) -> int:
        """How many clients are open (one per live thread that used one)."""
        with self._lock:
            return len(self._open)

    def close(self) -> None:
        """Close every thread's client; a thread that queries again opens a new one."""
        with self._lock:
            clients, self._open = list(self._open.values()), {}
        self._local = threading.local()
        for client in clients:
            client.close()

    def _release(self, client: Client) -> None:
        with self._lock:
            mine = self._open.pop(id(client), None) is client
        if mine:
            client.close()
