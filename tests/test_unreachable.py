"""Closing with events that cannot be written: every accepted handle resolves, the loss is
logged with its count, ``close()`` reports it — and nothing said to be lost was stored.

The store is made unreachable for real: PostgreSQL is reached through a TCP proxy the test
starts, then cuts (connections refused) or stalls (a network partition).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from uuid import UUID

import psycopg
import pytest

from auditcore import (
    AuditCore,
    DispatcherDrainError,
    DispatchSettings,
    EventNotStoredError,
    Settings,
)
from auditcore.store.dispatcher import DispatchHandle
from tests.conftest import fresh_postgres_store
from tests.tcpproxy import Proxy

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

ROOT = Path(__file__).parent.parent
QUICK_CLOSE = DispatchSettings(close_timeout=2.0, in_flight_wait=2.0, report_every=0)


@pytest.fixture
def store(postgres_database: str) -> str:
    return fresh_postgres_store(postgres_database)


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    with Proxy(("127.0.0.1", 5432)) as running:
        yield running


def through(proxy: Proxy, store: str) -> Settings:
    return Settings(f"{proxy.url(store)}&connect_timeout=1")


def stored_ids(store: str) -> set[UUID]:
    """Every event id in the store, read directly (not through the proxy)."""
    database, _, query = store.partition("?")
    schema = query.removeprefix("schema=")
    with psycopg.connect(database) as conn:
        rows = conn.execute(f'SELECT event_id FROM "{schema}".auditcore_event_ids').fetchall()
    return {row[0] for row in rows}


def dispatch(audit: AuditCore, count: int, tag: str) -> list[DispatchHandle]:
    return [
        audit.dispatch(
            "incident.comment_added", workspace_id="acme", metadata={"body": f"{tag} {n}"}
        )
        for n in range(count)
    ]


def test_closing_with_the_store_down_fails_every_handle_and_says_so(
    store: str, proxy: Proxy, caplog: pytest.LogCaptureFixture
) -> None:
    audit = AuditCore(through(proxy, store), dispatch=QUICK_CLOSE)
    before = dispatch(audit, 50, "before")
    assert audit.flush(timeout=30)
    proxy.cut()
    after = dispatch(audit, 5_000, "after")

    started = time.monotonic()
    with (
        caplog.at_level(logging.ERROR, "auditcore.store.dispatcher"),
        pytest.raises(DispatcherDrainError, match=r"left 5000 accepted event\(s\) not stored"),
    ):
        audit.close()
    took = time.monotonic() - started

    assert took < 2.0 + 2.0 + 5.0, "close() must return within its timeouts"
    assert all(handle.done() for handle in after)
    errors = [handle.exception(timeout=0) for handle in after]
    assert all(isinstance(error, EventNotStoredError) for error in errors)
    assert not any(error.maybe_stored for error in errors if isinstance(error, EventNotStoredError))
    assert "was not stored" in str(errors[0])
    assert "Record it again with the same event_id" in str(errors[0])
    assert any("5000 accepted event(s) not stored" in r.getMessage() for r in caplog.records)
    assert stored_ids(store) == {handle.result().event_id for handle in before}


def test_a_write_cut_off_mid_flight_is_reported_as_maybe_stored_never_as_lost(
    store: str, proxy: Proxy
) -> None:
    audit = AuditCore(through(proxy, store), dispatch=QUICK_CLOSE)
    dispatch(audit, 10, "warm")
    assert audit.flush(timeout=30)
    proxy.stall()  # the pooled connection stays open; nothing gets through
    handles = dispatch(audit, 3_000, "partitioned")
    time.sleep(0.5)  # the worker sends its batch and waits for an answer that never comes

    with pytest.raises(DispatcherDrainError) as raised:
        audit.close()

    report = raised.value.report
    assert report.maybe_stored > 0
    assert report.not_stored + report.maybe_stored == 3_000
    assert all(handle.done() for handle in handles)
    maybe = {h.stored.event_id for h in handles if _error(h).maybe_stored}
    lost = {h.stored.event_id for h in handles if not _error(h).maybe_stored}
    assert (len(maybe), len(lost)) == (report.maybe_stored, report.not_stored)
    proxy.resume()  # the partition heals: the write in flight may now complete
    deadline = time.monotonic() + 10
    while not stored_ids(store) & maybe and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not stored_ids(store) & lost, "an event reported as not stored was stored"


def _error(handle: DispatchHandle) -> EventNotStoredError:
    error = handle.exception(timeout=0)
    assert isinstance(error, EventNotStoredError)
    return error


@pytest.mark.parametrize(("ending", "exit_code"), [("sigterm", 143), ("exit", 0), ("close", 1)])
def test_a_process_stopping_with_the_store_down_logs_what_it_could_not_store(
    store: str, proxy: Proxy, ending: str, exit_code: int
) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.unreachable_worker", f"{proxy.url(store)}", ending],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert worker.stdout is not None
    assert worker.stdin is not None
    assert worker.stdout.readline().strip() == "warm"
    proxy.cut()
    started = time.monotonic()
    worker.stdin.write("go\n")
    worker.stdin.flush()
    _, stderr = worker.communicate(timeout=60)

    assert worker.returncode == exit_code, stderr
    assert time.monotonic() - started < 2.0 + 2.0 + 10.0
    assert "closed with 2000 accepted event(s) not stored" in stderr
    assert len(stored_ids(store)) == 10
