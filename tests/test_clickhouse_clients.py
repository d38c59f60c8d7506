"""Per-thread ClickHouse clients: each thread gets its own, taken on the thread that runs the
query, and closed when that thread ends."""

from __future__ import annotations

import gc
import threading

from auditcore.clickhouse.clients import ThreadClients
from auditcore.clickhouse.connection import ClickHouseTarget


def test_each_thread_has_its_own_client_closed_when_the_thread_ends(clickhouse_url: str) -> None:
    clients = ThreadClients(ClickHouseTarget(clickhouse_url))
    mine = clients()
    assert clients() is mine
    seen: list[object] = []
    answered: list[int] = []

    def work() -> None:
        client = clients()
        seen.append(client)
        answered.append(int(client.command("SELECT 1")))  # type: ignore[arg-type]

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    del thread, threads
    gc.collect()
    assert answered == [1, 1, 1, 1]
    assert len({id(client) for client in seen}) == 4
    assert mine not in seen
    assert clients.open_clients == 1  # only this thread's: the others ended
    clients.close()
    assert clients.open_clients == 0
