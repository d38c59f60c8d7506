"""Retention: archiving and pruning old events (events/s), and what a writer recording one
event per transaction from another process sees meanwhile (latency p50/p99), beside the same
writer alone in the same run.

The store holds ``events`` events in 20 workspaces, logged and signed, projected into an
embedded chDB; a default policy of 1 day is applied as of 2 days later, so every signed event
is archived (gzip JSON Lines in a temporary directory), deleted from PostgreSQL in batches of
``batch_size`` and from the read models."""

from __future__ import annotations

import multiprocessing
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

from auditcore import AuditCore, Settings
from auditcore.events.envelope import Actor
from auditcore.integrity.note import SignerKey
from auditcore.integrity.settings import IntegritySettings
from auditcore.lifecycle.retention import Retention
from benchmarks.common import (
    Measurement,
    bench_registry,
    console,
    fresh_database,
    populate,
    report,
    timed,
)

OPERATOR = Actor(id="bench", type="system")


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def _write(event_store: str, stop: Any, samples: Any) -> None:
    """The writer process: one event per transaction until ``stop`` is set; its latencies
    (seconds) go back through ``samples``."""
    taken: list[tuple[float, float]] = []
    with AuditCore(Settings(event_store), registry=bench_registry()) as audit:
        n = 0
        while not stop.is_set():
            at, started = time.time(), time.perf_counter()
            audit.record(
                "user.logged_in", workspace_id=f"ws{n % 20}", metadata={"n": n}, source="api"
            )
            taken.append((at, time.perf_counter() - started))
            if n == 0:
                samples.send("ready")
            n += 1
    samples.send(taken)
    samples.close()


class Writer:
    """Records one event per transaction, as fast as it can, until stopped: in a process of
    its own, as an application's writers are (in this process it would share the interpreter
    lock with the prune's archive writing, and measure that instead of the database)."""

    def __init__(self, event_store: str) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._receive, send = context.Pipe(duplex=False)
        self._process = context.Process(target=_write, args=(event_store, self._stop, send))
        self.timed: list[tuple[float, float]] = []
        """(wall-clock start, seconds) of each write."""

    @property
    def samples(self) -> list[float]:
        return [seconds for _, seconds in self.timed]

    def __enter__(self) -> Writer:
        self._process.start()
        if not self._receive.poll(120) or self._receive.recv() != "ready":
            raise RuntimeError("the writer process did not start")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._receive.poll(120):
            self.timed = self._receive.recv()
        self._process.join(30)

    def worst_between(self, start: float, end: float) -> float:
        """The longest write that began in ``[start, end)`` (wall clock), in seconds."""
        return max((s for at, s in self.timed if start <= at < end), default=0.0)

    def measurement(self, name: str, seconds: float) -> Measurement:
        p50, p99 = _percentile(self.samples, 0.5), _percentile(self.samples, 0.99)
        return Measurement(
            name,
            len(self.samples),
            seconds,
            note=f"latency p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {max(self.samples, default=0) * 1000:.0f} ms",
            samples=[p50, p99],
        )


class Waits:
    """Samples what the database's other sessions wait on, every 50 ms, until stopped: the
    longest wait for a lock seen, and how often each wait event was seen (to tell a write held
    up by the prune's lock from one held up by the disk)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.longest_lock = 0.0
        self.seen: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as connection:
            while not self._stop.wait(0.05):
                for kind, event, waited in connection.execute(
                    "SELECT wait_event_type, wait_event, "
                    "extract(epoch FROM now() - state_change)::float8 FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state = 'active' AND wait_event_type IS NOT NULL "
                    "AND wait_event_type NOT IN ('Client', 'Activity')"
                ).fetchall():
                    self.seen[f"{kind}:{event}"] += 1
                    if kind == "Lock":
                        self.longest_lock = max(self.longest_lock, waited or 0.0)

    def __enter__(self) -> Waits:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def describe(self) -> str:
        common = ", ".join(f"{name} x{count}" for name, count in self.seen.most_common(4))
        return f"longest lock wait seen {self.longest_lock * 1000:.0f} ms; waits seen: {common}"


def run(events: int, batch_size: int = 1_000, alone_seconds: float = 10.0) -> list[Measurement]:
    with (
        fresh_database("ac_bench_retention") as url,
        tempfile.TemporaryDirectory() as scratch,
    ):
        key_file = Path(scratch) / "log.key"
        key_file.write_text(SignerKey.generate("bench.example").encode())
        integrity = IntegritySettings(signing_key=key_file)
        settings = Settings(url, f"chdb://{scratch}/clickhouse")
        with AuditCore(settings, registry=bench_registry(), integrity=integrity) as audit:
            populate(audit, events)
            console.print("logging, signing and projecting …")
            audit.integrity.sign_now()
            audit.project()
            retention = Retention(audit, Path(scratch) / "archives")
            retention.set_policy(None, 1, actor=OPERATOR, source="cli")
            console.print(f"writer alone for {alone_seconds:g} s …")
            with Writer(url) as alone:
                time.sleep(alone_seconds)
            baseline = alone.measurement("writer alone (one event per transaction)", alone_seconds)
            console.print("archive and prune, with the writer running …")
            deleting: list[float] = []  # wall clock of each deletion batch's end
            with Writer(url) as during, Waits(url) as waits:
                began = time.time()
                pruned, seconds = timed(
                    lambda: (
                        retention.run(
                            now=datetime.now(UTC) + timedelta(days=2),
                            batch_size=batch_size,
                            progress=lambda _: deleting.append(time.time()),
                        ).pruned
                    )
                )
                ended = time.time()
            retention.close()
            first, last = (deleting[0], deleting[-1]) if deleting else (ended, ended)
            phases = {
                "archiving": (began, first),
                "deleting": (first, last),
                "read models": (last, ended + 1),
            }
            worst = {
                phase: during.worst_between(*bounds) * 1000 for phase, bounds in phases.items()
            }
            prune = Measurement(
                f"retention run: archive (gzip JSON Lines), delete from PostgreSQL in batches "
                f"of {batch_size:,} and from the read models",
                pruned,
                seconds,
            )
            meanwhile = during.measurement("writer during the prune", seconds)
            meanwhile.note += (
                (
                    f" ({meanwhile.samples[1] / baseline.samples[1]:.1f}x the p99 alone)"
                    if baseline.samples[1]
                    else ""
                )
                + "; longest write while "
                + ", ".join(f"{phase} {ms:.0f} ms" for phase, ms in worst.items())
                + f"; {waits.describe()}"
            )
            rows = [prune, baseline, meanwhile]
            report(
                "retention — archive and prune",
                rows,
                baseline=prune.name,
                extra={
                    "events": events,
                    "batch_size": batch_size,
                    "writer_p99_alone_ms": baseline.samples[1] * 1000,
                    "writer_p99_during_ms": meanwhile.samples[1] * 1000,
                    **{f"writer_max_{p.replace(' ', '_')}_ms": ms for p, ms in worst.items()},
                    "longest_lock_wait_ms": waits.longest_lock * 1000,
                    "waits_seen": dict(waits.seen.most_common(8)),
                },
            )
            return rows
