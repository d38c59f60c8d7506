"""Append: how fast events reach the store.

Beside, in the same run against the same PostgreSQL: the eventsourcing library's default path
with one event per save and with ``save(*1000)``, and raw binary COPY into a table identical to
the events table (the ceiling: no validation, no envelope, no index of event ids).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from multiprocessing.synchronize import Event, Semaphore
from uuid import uuid4

import psycopg
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event
from pydantic import BaseModel, ConfigDict, Field

from auditcore import AuditCore, Settings
from auditcore.events.actions import ActionRegistry, ActionSpec, SchemaMetadata, default_registry
from auditcore.store.dispatcher import DispatchSettings
from benchmarks.common import (
    Measurement,
    bench_registry,
    console,
    fresh_database,
    realistic_drafts,
    report,
    timed,
)


class Entry(Aggregate):
    """What a team would write with the library alone: one aggregate per audit entry."""

    @event("Recorded")
    def __init__(self, workspace_id: str, action: str, actor_id: str, metadata: dict) -> None:
        self.workspace_id = workspace_id
        self.action = action
        self.actor_id = actor_id
        self.metadata = metadata


class Library(Application[object]):
    name = "library"


def library_env(url: str) -> dict[str, str]:
    env = Settings(url).eventsourcing_env()
    env.pop("APPLICATION_RECORDER_TOPIC")
    return env


def entries(count: int) -> list[Entry]:
    return [
        Entry(d["workspace_id"], d["action"], d["actor"]["id"], d["metadata"])
        for d in realistic_drafts(count)
    ]


def library_one_per_save(url: str, count: int) -> Measurement:
    with Library(env=library_env(url)) as app:
        batch = entries(count)
        done, seconds = timed(lambda: sum(1 for entry in batch if app.save(entry)))
    return Measurement("eventsourcing: one event per save()", done, seconds)


def library_batches(url: str, count: int, size: int = 1000) -> Measurement:
    with Library(env=library_env(url)) as app:
        batch = entries(count)

        def save_all() -> int:
            for start in range(0, count, size):
                app.save(*batch[start : start + size])
            return count

        done, seconds = timed(save_all)
    return Measurement(f"eventsourcing: save(*{size})", done, seconds)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoggedIn(_Strict):
    method: str = Field(max_length=20)
    mfa: bool


class SettingChanged(_Strict):
    setting: str = Field(max_length=40)
    old: str = Field(max_length=500)
    new: str = Field(max_length=500)


class KeyUsed(_Strict):
    route: str = Field(max_length=200)
    status: int = Field(ge=100, le=599)


TYPED = {"user.logged_in": LoggedIn, "settings.updated": SettingChanged, "api_key.used": KeyUsed}
"""The benchmark's own actions with typed metadata, as pydantic models and (below) the same
rules as JSON Schema: the two ways to declare an action, compared per event."""


def typed_registry() -> ActionRegistry:
    registry = default_registry.copy()
    for name, model in TYPED.items():
        registry.register(name, model)
    return registry


def schema_registry(audit: AuditCore) -> None:
    for name, model in TYPED.items():
        audit.register_action(name, model.model_json_schema(), registered_by="benchmark")


def validation(url: str, count: int, kind: str, path: str) -> Measurement:
    """Validating events (envelope and metadata; nothing stored) with the actions declared one
    way or the other, on ``dispatch()``'s one-pass encoder or ``record()``'s model path."""
    registry = typed_registry() if kind == "pydantic" else default_registry.copy()
    with AuditCore(Settings(url), registry=registry) as audit:
        if kind == "JSON Schema":
            schema_registry(audit)
        drafts = [d for d in realistic_drafts(count) if d["action"] in TYPED]
        audit.build_draft(drafts[0])  # the catalog is read once, before timing

        def encode_all() -> int:
            for draft in drafts:
                fields = dict(draft)
                action, workspace = fields.pop("action"), fields.pop("workspace_id")
                encode(action, workspace, fields.pop("metadata"), fields)
            return len(drafts)

        def build_all() -> int:
            for draft in drafts:
                audit.build_draft(draft)
            return len(drafts)

        encode = audit._standalone.encode
        done, seconds = timed(encode_all if path == "dispatch" else build_all)
    return Measurement(
        f"{path}() validation, metadata as {kind}",
        done,
        seconds,
        note=f"{seconds / max(done, 1) * 1e6:.1f} µs per event, nothing stored",
    )


def _schema_specs() -> dict[str, ActionSpec]:
    """The benchmark's typed actions as the catalog builds them from JSON Schema."""
    return {
        name: ActionSpec(name, SchemaMetadata, json_schema=model.model_json_schema())
        for name, model in TYPED.items()
    }


def metadata_only(count: int, repeats: int) -> list[Measurement]:
    """Metadata alone, in CPU time (what load inflates least): each action's pydantic model,
    against the same rules as JSON Schema on the quick path (jsonschema-rs says valid) and on
    ``jsonschema`` alone (the path invalid metadata, and schemas with patterns, take)."""
    samples = [
        (name, draft["metadata"])
        for draft in realistic_drafts(count)
        if (name := draft["action"]) in TYPED
    ]
    python = typed_registry()
    quick = {
        n: ActionSpec(n, SchemaMetadata, json_schema=m.model_json_schema())
        for n, m in TYPED.items()
    }
    alone = {
        n: ActionSpec(n, SchemaMetadata, json_schema=m.model_json_schema())
        for n, m in TYPED.items()
    }
    for spec in alone.values():
        assert spec.check is not None
        spec.check._quick = None  # jsonschema only, as before the quick path

    def by_model() -> int:
        for name, metadata in samples:
            python.validate_metadata(name, metadata)
        return len(samples)

    def by_schema(specs: dict[str, ActionSpec]) -> Callable[[], int]:
        def run() -> int:
            for name, metadata in samples:
                spec = specs[name]
                clean = spec.dump(spec.model.model_validate(metadata))
                if spec.problems(clean) or python.limits.check(clean):
                    raise AssertionError(f"{name}: {metadata} refused")
            return len(samples)

        return run

    rows = []
    for name, run in (
        ("metadata as a pydantic model", by_model),
        ("metadata as JSON Schema, quick path (jsonschema-rs)", by_schema(quick)),
        ("metadata as JSON Schema, jsonschema alone", by_schema(alone)),
    ):
        runs = []
        for _ in range(repeats):
            started = time.process_time()
            done = run()
            seconds = time.process_time() - started
            runs.append(
                Measurement(
                    name, done, seconds, note=f"{seconds / done * 1e6:.1f} µs CPU per event"
                )
            )
        runs.sort(key=lambda run: run.rate)
        middle = runs[len(runs) // 2]
        middle.samples = [run.rate for run in runs]
        rows.append(middle)
    report(
        f"metadata validation, CPU time, median of {repeats} (load {os.getloadavg()[0]:.1f})",
        rows,
        baseline="metadata as a pydantic model",
        extra={"events": len(samples), "repeats": repeats},
    )
    return rows


def run_validation(count: int, repeats: int) -> list[Measurement]:
    """Per-event cost of validating against a JSON Schema action against a pydantic one."""
    rows = []
    for path in ("dispatch", "record"):
        for kind in ("pydantic", "JSON Schema"):
            runs = []
            for attempt in range(1, repeats + 1):
                console.print(f"{path}() validation, {kind} ({attempt}/{repeats}) …")
                with fresh_database(f"ac_bench_validate_{uuid4().hex[:4]}") as url:
                    runs.append(validation(url, count, kind, path))
            runs.sort(key=lambda run: run.rate)
            middle = runs[len(runs) // 2]
            middle.samples = [run.rate for run in runs]
            rows.append(middle)
    report(
        f"validation — pydantic against JSON Schema actions, median of {repeats}",
        rows,
        baseline="dispatch() validation, metadata as pydantic",
        extra={"events": count, "repeats": repeats},
    )
    return rows


def auditcore_record(url: str, count: int) -> Measurement:
    with AuditCore(Settings(url), registry=bench_registry()) as audit:
        drafts = list(realistic_drafts(count))
        done, seconds = timed(lambda: sum(1 for d in drafts if audit.record(**d)))
    return Measurement(
        "auditcore: record() (returns after commit)",
        done,
        seconds,
        note="validated envelope, one transaction each",
    )


def auditcore_record_many(url: str, count: int, size: int = 1000) -> Measurement:
    with AuditCore(Settings(url), registry=bench_registry()) as audit:
        drafts = list(realistic_drafts(count))

        def record_all() -> int:
            for start in range(0, count, size):
                audit.record_many(drafts[start : start + size])
            return count

        done, seconds = timed(record_all)
    return Measurement(
        f"auditcore: record_many({size:,} at a time)",
        done,
        seconds,
        note="validated envelope; COPY in one locked transaction",
    )


def auditcore_dispatch(url: str, count: int, producers: int) -> Measurement:
    settings = DispatchSettings(max_buffer=200_000, max_batch=10_000)
    with AuditCore(Settings(url), registry=bench_registry(), dispatch=settings) as audit:
        drafts = list(realistic_drafts(count))
        share = count // producers

        def produce(part: list[dict[str, object]]) -> None:
            for draft in part:
                audit.dispatch(**draft)  # type: ignore[arg-type]

        def run() -> int:
            threads = [
                threading.Thread(target=produce, args=(drafts[i * share : (i + 1) * share],))
                for i in range(producers)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            audit.flush()
            return share * producers

        done, seconds = timed(run)
        stats = audit.stats()
    note = "validated and encoded in the caller"
    if stats:
        note += f"; batches up to {stats.largest_batch:,}"
    threads = "1 thread" if producers == 1 else f"{producers} threads"
    return Measurement(
        f"auditcore: dispatch() from {threads}, until flushed", done, seconds, note=note
    )


def _dispatching_process(
    url: str, count: int, seed: int, ready: Semaphore, start: Event, done: Semaphore
) -> None:
    settings = DispatchSettings(max_buffer=count, max_batch=10_000)
    with AuditCore(Settings(url), registry=bench_registry(), dispatch=settings) as audit:
        drafts = list(realistic_drafts(count, seed=seed))
        ready.release()
        start.wait()
        for draft in drafts:
            audit.dispatch(**draft)
        audit.flush()
        done.release()


def auditcore_dispatch_processes(url: str, count: int, processes: int) -> Measurement:
    """What an application with several worker processes sustains: each process dispatches
    its share; the clock runs from the common start until every process has flushed."""
    AuditCore(Settings(url), registry=bench_registry()).close()  # tables made before the race
    context = multiprocessing.get_context("spawn")
    ready, done, start = context.Semaphore(0), context.Semaphore(0), context.Event()
    share = count // processes
    workers = [
        context.Process(target=_dispatching_process, args=(url, share, seed, ready, start, done))
        for seed in range(processes)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.acquire()
    started = time.perf_counter()
    start.set()
    for _ in workers:
        done.acquire()
    seconds = time.perf_counter() - started
    for worker in workers:
        worker.join()
        if worker.exitcode:
            raise RuntimeError(f"a dispatching process failed (exit code {worker.exitcode})")
    return Measurement(
        f"auditcore: dispatch() from {processes} processes, until flushed",
        share * processes,
        seconds,
        note=f"one process per core ({os.cpu_count()} here), each as the 1-thread row",
    )


def auditcore_dispatcher_writes(url: str, count: int) -> Measurement:
    """The dispatcher's own path: events validated and encoded before the clock starts, as
    the library rows build their aggregates before it."""
    settings = DispatchSettings(max_buffer=count, max_batch=10_000)
    with AuditCore(Settings(url), registry=bench_registry(), dispatch=settings) as audit:
        encoded = [
            audit.app.mapper.to_stored_event(audit.build_draft(draft))
            for draft in realistic_drafts(count)
        ]

        def run() -> int:
            for stored in encoded:
                audit.dispatcher.submit(stored)  # type: ignore[arg-type]
            audit.flush()
            return count

        done, seconds = timed(run)
    return Measurement(
        "auditcore: the dispatcher's write path",
        done,
        seconds,
        note="pre-validated events: submit, batch, binary COPY with the id index, commit",
    )


def raw_copy(url: str, count: int, size: int = 10_000) -> Measurement:
    """Binary COPY of ready-made rows into a table shaped like the events table."""
    with AuditCore(Settings(url), registry=bench_registry()) as audit:
        rows = []
        for draft in realistic_drafts(count):
            stored = audit.app.mapper.to_stored_event(audit.build_draft(draft))
            rows.append(
                (stored.originator_id, stored.originator_version, stored.topic, stored.state)
            )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE raw_events (originator_id uuid NOT NULL, originator_version bigint "
            "NOT NULL, topic text, state bytea, notification_id bigserial, PRIMARY KEY "
            "(originator_id, originator_version)); CREATE UNIQUE INDEX ON raw_events "
            "(notification_id)"
        )

        def copy_all() -> int:
            for start in range(0, count, size):
                with (
                    conn.transaction(),
                    conn.cursor() as curs,
                    curs.copy(
                        "COPY raw_events (originator_id, originator_version, topic, state) "
                        "FROM STDIN (FORMAT BINARY)"
                    ) as copy,
                ):
                    copy.set_types(["uuid", "int8", "text", "bytea"])
                    for row in rows[start : start + size]:
                        copy.write_row(row)
            return count

        done, seconds = timed(copy_all)
    return Measurement(
        f"raw binary COPY, {size:,} rows per transaction (ceiling)",
        done,
        seconds,
        note="pre-encoded rows, no validation",
    )


def run(single: int, batched: int, dispatched: int, repeats: int) -> list[Measurement]:
    """Each row is the run with the median rate of ``repeats``, each on a fresh database."""
    rows = []
    for name, measure in (
        ("raw COPY", lambda url: raw_copy(url, batched)),
        ("library, one per save", lambda url: library_one_per_save(url, single)),
        ("library, save(*1000)", lambda url: library_batches(url, batched)),
        ("auditcore record()", lambda url: auditcore_record(url, single)),
        ("auditcore record_many()", lambda url: auditcore_record_many(url, batched)),
        ("auditcore dispatch(), 1 thread", lambda url: auditcore_dispatch(url, dispatched, 1)),
        ("auditcore dispatch(), 4 threads", lambda url: auditcore_dispatch(url, dispatched, 4)),
        (
            "auditcore dispatch(), processes",
            lambda url: auditcore_dispatch_processes(url, dispatched, os.cpu_count() or 1),
        ),
        ("the dispatcher's write path", lambda url: auditcore_dispatcher_writes(url, dispatched)),
    ):
        runs = []
        for attempt in range(1, repeats + 1):
            console.print(f"{name} ({attempt}/{repeats}) …")
            with fresh_database(f"ac_bench_append_{uuid4().hex[:4]}") as url:
                runs.append(measure(url))
        runs.sort(key=lambda run: run.rate)
        middle = runs[len(runs) // 2]
        middle.samples = [run.rate for run in runs]
        rows.append(middle)
    report(
        f"append — writing events, median of {repeats}",
        rows,
        baseline="eventsourcing: save(*1000)",
        extra={"events": dispatched, "repeats": repeats},
    )
    return rows
