"""Encryption: what sealing personal fields costs on the write path.

The same realistic events (500 actors, each with a name and an IP address: both sealed under
the actor's key) recorded with encryption off and on, each in a fresh PostgreSQL database:
``record()`` one at a time, and ``dispatch()`` from one thread until flushed. Runs alternate
off/on and the median of ``repeats`` is reported. The target: at most 20 % slower.
"""

from __future__ import annotations

from auditcore import AuditCore, Settings
from auditcore.lifecycle.master import MasterKeys, new_master_key
from auditcore.store.dispatcher import DispatchSettings
from benchmarks.common import (
    Measurement,
    bench_registry,
    console,
    fresh_database,
    median,
    realistic_drafts,
    report,
    timed,
)


def _core(url: str, encrypted: bool, dispatch: DispatchSettings | None = None) -> AuditCore:
    keys = MasterKeys.parse(new_master_key(), "benchmark") if encrypted else None
    return AuditCore(Settings(url), registry=bench_registry(), dispatch=dispatch, master_keys=keys)


def _record(encrypted: bool, count: int) -> float:
    with fresh_database("bench_h21b_enc") as url, _core(url, encrypted) as audit:
        drafts = list(realistic_drafts(count))
        _, seconds = timed(lambda: sum(1 for d in drafts if audit.record(**d)))
    return seconds


def _dispatch(encrypted: bool, count: int) -> float:
    settings = DispatchSettings(max_buffer=count, max_batch=10_000)
    with fresh_database("bench_h21b_enc") as url, _core(url, encrypted, settings) as audit:
        drafts = list(realistic_drafts(count))

        def run() -> int:
            for draft in drafts:
                audit.dispatch(**draft)
            audit.flush()
            return count

        _, seconds = timed(run)
    return seconds


def run(single: int, dispatched: int, repeats: int) -> None:
    console.print(
        f"[bold]encryption[/bold]: record {single:,}, dispatch {dispatched:,}, x{repeats}"
    )
    times: dict[tuple[str, bool], list[float]] = {}
    for _ in range(repeats):
        for encrypted in (False, True):
            times.setdefault(("record", encrypted), []).append(_record(encrypted, single))
            times.setdefault(("dispatch", encrypted), []).append(_dispatch(encrypted, dispatched))
    rows = []
    for path, count in (("record", single), ("dispatch", dispatched)):
        off, on = median(times[(path, False)]), median(times[(path, True)])
        rows.append(Measurement(f"{path}(): encryption off", count, off))
        rows.append(
            Measurement(
                f"{path}(): encryption on",
                count,
                on,
                note=f"{(on / off - 1) * 100:+.1f}% time vs off (target <= +20%)",
            )
        )
    report(
        "encryption",
        rows,
        baseline="record(): encryption off",
        extra={"events": f"{single:,} / {dispatched:,}", "repeats": repeats},
    )
