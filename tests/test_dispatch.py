"""The dispatcher: fast, bounded, and never losing an accepted event."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast
from uuid import uuid4

import psycopg
import pytest

from auditcore import AuditCore, AuditEvent, InvalidEventError, Settings
from auditcore.projection.log import LogReader
from auditcore.store.dispatcher import (
    DispatchBufferFullError,
    Dispatcher,
    DispatchHandle,
    DispatchSettings,
    FullBufferPolicy,
)
from auditcore.store.mapper import AuditStoredEvent

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

ROOT = Path(__file__).parent.parent


def stored_comments(audit: AuditCore) -> list[tuple[str, str]]:
    """(actor id, body) of every stored event, in the store's global order."""
    import orjson  # noqa: PLC0415

    if audit.settings.uses_postgres:
        # The log reader takes a pooled connection as it is, and does not retry: drop those
        # that connection-killing tests left dead in the pool.
        audit.app.recorder.datastore.pool.check()  # type: ignore[attr-defined]
    log = LogReader(audit.app)
    found: list[tuple[str, str]] = []
    position = 0
    while batch := log.after(position, 50_000):
        for event in batch:
            state = orjson.loads(event.state)
            found.append((state["actor"]["id"], state["metadata"]["body"]))
        position = batch[-1].position
    return found


def test_a_burst_from_many_threads_lands_exactly_once_in_each_threads_order(
    pg_settings: Settings,
) -> None:
    threads, per_thread = 8, 12_500
    with AuditCore(pg_settings) as audit:

        def produce(tag: str) -> None:
            for n in range(per_thread):
                audit.dispatch(
                    "incident.comment_added",
                    workspace_id="acme",
                    metadata={"body": f"{tag} {n}"},
                    actor={"id": tag},
                )

        workers = [threading.Thread(target=produce, args=(f"t{i}",)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert audit.flush(timeout=120)
        stats = audit.stats()
        found = stored_comments(audit)

    assert len(found) == threads * per_thread
    assert len(set(found)) == len(found)
    for i in range(threads):
        mine = [body for actor, body in found if actor == f"t{i}"]
        assert mine == [f"t{i} {n}" for n in range(per_thread)]
    assert stats is not None
    assert stats.written == threads * per_thread
    assert stats.largest_batch > 100, "events were not batched"


@contextmanager
def connections_killed(settings: Settings, pause: Callable[[], float]) -> Iterator[list[float]]:
    """Terminate every other connection to the store's database every ``pause()`` seconds
    while the block runs; yields the moments of the kills (filled as they happen)."""
    stop = threading.Event()
    kills: list[float] = []

    def kill() -> None:
        with psycopg.connect(settings.postgres_conninfo(), autocommit=True) as admin:
            while not stop.wait(pause()):
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                kills.append(time.monotonic())

    killer = threading.Thread(target=kill)
    killer.start()
    try:
        yield kills
    finally:
        stop.set()
        killer.join()


def test_lost_connections_mid_burst_lose_nothing(pg_settings: Settings) -> None:
    with AuditCore(pg_settings) as audit:
        audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "warm"})
        with connections_killed(pg_settings, lambda: 0.05):
            futures = [
                audit.dispatch(
                    "incident.comment_added",
                    workspace_id="acme",
                    metadata={"body": f"n {n}"},
                    actor={"id": "k"},
                )
                for n in range(20_000)
            ]
            time.sleep(1.0)
        assert audit.flush(timeout=120)
        assert all(future.exception() is None for future in futures)
        found = [body for actor, body in stored_comments(audit) if actor == "k"]
        stats = audit.stats()

    assert found == [f"n {n}" for n in range(20_000)]
    assert stats is not None


def test_re_dispatching_an_event_id_records_it_once(store_settings: Settings) -> None:
    key = uuid4()
    with AuditCore(store_settings) as audit:
        first = audit.dispatch(
            "incident.comment_added", workspace_id="acme", metadata={"body": "once"}, event_id=key
        )
        audit.flush()
        again = [
            audit.dispatch(
                "incident.comment_added",
                workspace_id="acme",
                metadata={"body": "once"},
                event_id=key,
            )
            for _ in range(50)
        ]
        audit.flush()
        assert all(future.result().event_id == key for future in [first, *again])
        assert [body for _, body in stored_comments(audit)] == ["once"]


def test_invalid_events_are_refused_in_the_caller(pg_settings: Settings) -> None:
    with AuditCore(pg_settings) as audit, pytest.raises(InvalidEventError, match=r"metadata\.body"):
        audit.dispatch("incident.comment_added", workspace_id="acme", metadata={})


@pytest.mark.parametrize("policy", [FullBufferPolicy.REJECT, FullBufferPolicy.BLOCK])
def test_a_full_buffer_refuses_clearly_and_keeps_what_it_accepted(
    pg_settings: Settings, policy: FullBufferPolicy
) -> None:
    gate = threading.Event()
    with AuditCore(pg_settings) as audit:

        def slow_store(events: list[AuditStoredEvent]) -> list[AuditStoredEvent]:
            gate.wait()
            audit.app.recorder.insert_events(events)
            return events

        def decode(stored: AuditStoredEvent) -> AuditEvent:
            return cast("AuditEvent", audit.app.mapper.to_domain_event(stored))

        dispatcher = Dispatcher(
            slow_store,
            decode,
            DispatchSettings(max_buffer=5, max_batch=2, policy=policy, block_timeout=0.3),
        )
        accepted: list[DispatchHandle] = []
        started = time.monotonic()

        def fill() -> None:
            for n in range(100):
                draft = {
                    "action": "incident.comment_added",
                    "workspace_id": "acme",
                    "metadata": {"body": f"{n}"},
                }
                stored = audit.app.mapper.to_stored_event(audit.build_draft(draft))
                accepted.append(dispatcher.submit(cast("AuditStoredEvent", stored)))

        with pytest.raises(DispatchBufferFullError, match="the dispatch buffer is full"):
            fill()
        waited = time.monotonic() - started
        assert 5 <= len(accepted) <= 8  # the buffer, plus the batch the worker holds
        if policy is FullBufferPolicy.BLOCK:
            assert waited >= 0.3
        gate.set()
        assert dispatcher.close(timeout=30)
        assert [f.result().metadata["body"] for f in accepted] == [
            str(n) for n in range(len(accepted))
        ]
        assert dispatcher.stats().rejected == 1


@pytest.mark.parametrize(("ending", "exit_code"), [("sigterm", -15), ("exit", 0), ("close", 0)])
def test_shutdown_drains_the_buffer(postgres_database: str, ending: str, exit_code: int) -> None:
    from tests.conftest import fresh_postgres_store  # noqa: PLC0415

    store = fresh_postgres_store(postgres_database)
    done = subprocess.run(
        [sys.executable, "-m", "tests.dispatch_worker", store, "20000", ending],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert "dispatched" in done.stdout, done.stderr
    assert done.returncode in (exit_code, 128 + 15 if ending == "sigterm" else exit_code)
    with AuditCore(Settings(store)) as audit:
        assert [b for _, b in stored_comments(audit)] == [f"w {n}" for n in range(20_000)]


def test_a_follower_sees_every_event_in_order_during_multi_process_ingest(
    pg_settings: Settings,
) -> None:
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.dispatch_worker",
                pg_settings.event_store,
                "15000",
                "close",
                f"p{i}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        for i in range(3)
    ]
    seen: list[int] = []
    with AuditCore(pg_settings) as audit:
        log = LogReader(audit.app)
        position = 0
        while any(w.poll() is None for w in writers) or (batch := log.after(position, 5_000)):
            batch = log.after(position, 5_000)
            seen += [event.position for event in batch]
            position = batch[-1].position if batch else position
            if not batch:
                time.sleep(0.005)
        for writer in writers:
            assert writer.wait() == 0, writer.stderr.read() if writer.stderr else ""
        everything = []
        position = 0
        while batch := log.after(position, 50_000):
            everything += [event.position for event in batch]
            position = batch[-1].position

    assert len(everything) == 45_000
    assert seen == everything


@pytest.mark.parametrize("count", [10, 2_000])  # the library's insert; COPY, split in halves
def test_one_bad_event_fails_alone_not_its_whole_batch(
    store_settings: Settings, count: int
) -> None:
    from auditcore import EventIdReusedError  # noqa: PLC0415

    key, bad = uuid4(), count * 2 // 3
    with AuditCore(store_settings, dispatch=DispatchSettings(max_delay=0.5)) as audit:
        audit.record(
            "incident.comment_added", workspace_id="acme", metadata={"body": "x"}, event_id=key
        )
        futures = [
            audit.dispatch(
                "incident.comment_added",
                workspace_id="acme",
                metadata={"body": "y" if n == bad else f"ok {n}"},
                event_id=key if n == bad else None,
            )
            for n in range(count)
        ]
        audit.flush()
        stats = audit.stats()
        with pytest.raises(EventIdReusedError):
            futures[bad].result()
        assert [f.result().metadata["body"] for i, f in enumerate(futures) if i != bad] == [
            f"ok {n}" for n in range(count) if n != bad
        ]
        assert [body for _, body in stored_comments(audit)] == [
            "x",
            *(f"ok {n}" for n in range(count) if n != bad),
        ]
    assert stats is not None
    assert (stats.written, stats.failed) == (count - 1, 1)
    if count > 1_000:
        assert stats.batches < 50, "the bad event was found by halving, not one by one"


def test_dispatch_settings_take_policy_names_and_refuse_nonsense() -> None:
    assert DispatchSettings(policy="reject").policy is FullBufferPolicy.REJECT  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'drop' is not a valid FullBufferPolicy"):
        DispatchSettings(policy="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_buffer and max_batch must be at least 1"):
        DispatchSettings(max_buffer=0)


def test_dispatching_while_closing_stores_or_refuses_each_event(pg_settings: Settings) -> None:
    from auditcore.store.dispatcher import DispatcherClosedError  # noqa: PLC0415

    accepted: list[DispatchHandle] = []
    refused: list[str] = []
    with AuditCore(pg_settings) as audit:
        begin = threading.Barrier(5)

        def produce(tag: str) -> None:
            begin.wait()
            for n in itertools.count():
                try:
                    accepted.append(
                        audit.dispatch(
                            "incident.comment_added",
                            workspace_id="acme",
                            metadata={"body": f"{tag} {n}"},
                            actor={"id": tag},
                        )
                    )
                except DispatcherClosedError:
                    refused.append(tag)
                    return

        producers = [threading.Thread(target=produce, args=(f"t{i}",)) for i in range(4)]
        for producer in producers:
            producer.start()
        begin.wait()
        time.sleep(0.3)
        assert audit.dispatcher.close(timeout=60)
        for producer in producers:
            producer.join()
        found = stored_comments(audit)

    assert sorted(refused) == ["t0", "t1", "t2", "t3"]
    assert all(handle.done() and handle.exception() is None for handle in accepted)
    assert len(found) == len(accepted)
    assert sorted(found) == sorted(
        (h.result().actor.id, str(h.result().metadata["body"])) for h in accepted
    )


KILLED_EVENTS = int(os.environ.get("AUDITCORE_KILLED_EVENTS", "20000"))


def test_batches_shrink_under_repeated_failures_so_writes_keep_progressing(
    pg_settings: Settings,
) -> None:
    """Connections killed every 0.01-0.08 s for the whole run: a 10,000-event batch hardly ever
    commits between two kills, so it must shrink until batches do; once the kills stop,
    batches grow back."""
    pause = random.Random(14)
    # The worker waits up to a second for a full batch: the first ones are max_batch events.
    with AuditCore(pg_settings, dispatch=DispatchSettings(max_delay=1.0)) as audit:
        audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "warm"})
        with connections_killed(pg_settings, lambda: pause.uniform(0.01, 0.08)) as kills:
            handles = [
                audit.dispatch(
                    "incident.comment_added",
                    workspace_id="acme",
                    metadata={"body": f"n {n}"},
                    actor={"id": "k"},
                )
                for n in range(KILLED_EVENTS)
            ]
            # Everything must be written while the kills go on.
            assert audit.flush(timeout=180), "no progress under repeated connection kills"
        stats = audit.stats()
        assert all(handle.exception() is None for handle in handles)
        more = [
            audit.dispatch("incident.comment_added", workspace_id="acme", metadata={"body": "m"})
            for _ in range(20_000)
        ]
        assert audit.flush(timeout=60)
        assert all(handle.exception() is None for handle in more)
        assert audit.dispatcher.batch_limit == audit.dispatcher.settings.max_batch, "no regrowth"
        found = [body for actor, body in stored_comments(audit) if actor == "k"]

    assert found == [f"n {n}" for n in range(KILLED_EVENTS)]
    assert stats is not None
    assert stats.retries > 0
    assert len(kills) > 5
    assert stats.batches > 3 * KILLED_EVENTS // 10_000, "the batches never shrank"
