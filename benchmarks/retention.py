"""Retention: archiving and pruning old events (events/s), and what a writer recording one
event per transaction sees meanwhile (latency p50/p99), beside the same writer alone.

The store holds ``events`` events in 20 workspaces, logged and signed, projected into an
embedded chDB; a default policy of 1 day is applied as of 2 days later, so every signed event
is archived (gzip JSON Lines in a temporary directory), deleted from PostgreSQL in batches of
``batch_size`` and from the read models."""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


class Writer:
    """Records one event per transaction, as fast as it can, until stopped."""

    def __init__(self, settings: Settings) -> None:
        self.audit = AuditCore(settings, registry=bench_registry())
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._write, daemon=True)

    def _write(self) -> None:
        n = 0
        while not self._stop.is_set():
            started = time.perf_counter()
            self.audit.record(
                "user.logged_in", workspace_id=f"ws{n % 20}", metadata={"n": n}, source="api"
            )
            self.samples.append(time.perf_counter() - started)
            n += 1

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.audit.close()

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
            with Writer(Settings(url)) as alone:
                time.sleep(alone_seconds)
            baseline = alone.measurement("writer alone (one event per transaction)", alone_seconds)
            console.print("archive and prune, with the writer running …")
            with Writer(Settings(url)) as during:
                pruned, seconds = timed(
                    lambda: (
                        retention.run(
                            now=datetime.now(UTC) + timedelta(days=2), batch_size=batch_size
                        ).pruned
                    )
                )
            retention.close()
            prune = Measurement(
                f"retention run: archive (gzip JSON Lines), delete from PostgreSQL in batches "
                f"of {batch_size:,} and from the read models",
                pruned,
                seconds,
            )
            meanwhile = during.measurement("writer during the prune", seconds)
            meanwhile.note += (
                f" ({meanwhile.samples[1] / baseline.samples[1]:.1f}x the p99 alone)"
                if baseline.samples[1]
                else ""
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
                },
            )
            return rows
