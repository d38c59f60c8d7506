"""Encryption: what sealing personal fields costs on the write path.

The same realistic events (20 workspaces of 500 actors, each with a name and an IP address:
both sealed under the actor's key) recorded with encryption off and on, each in a fresh
PostgreSQL database: ``record()`` one at a time, and ``dispatch()`` from one thread until
flushed. Runs alternate off/on and the median of ``repeats`` is reported. The target: at most
20 % slower.

"Known subjects" is the steady state: every subject already has its key (made before the
clock starts). "New subjects" starts from an empty key table, so nearly every event (10,000
workspace-actor pairs) first makes its subject's key: one more round trip to the database.
"""

from __future__ import annotations

from typing import Any

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


def _core(
    url: str, mode: str, drafts: list[dict[str, Any]], dispatch: DispatchSettings | None = None
) -> AuditCore:
    keys = MasterKeys.parse(new_master_key(), "benchmark") if mode != "off" else None
    audit = AuditCore(Settings(url), registry=bench_registry(), dispatch=dispatch, master_keys=keys)
    if mode == "known" and audit.subject_keys is not None:
        for draft in drafts:  # every subject of the timed events gets its key first
            audit.subject_keys.current(draft["workspace_id"], draft["actor"]["id"])
    return audit


def _record(mode: str, count: int) -> float:
    drafts = list(realistic_drafts(count))
    with fresh_database("bench_h21b_enc") as url, _core(url, mode, drafts) as audit:
        _, seconds = timed(lambda: sum(1 for d in drafts if audit.record(**d)))
    return seconds


def _dispatch(mode: str, count: int) -> float:
    settings = DispatchSettings(max_buffer=count, max_batch=10_000)
    drafts = list(realistic_drafts(count))
    with fresh_database("bench_h21b_enc") as url, _core(url, mode, drafts, settings) as audit:

        def run() -> int:
            for draft in drafts:
                audit.dispatch(**draft)
            audit.flush()
            return count

        _, seconds = timed(run)
    return seconds


def run(single: int, dispatched: int, repeats: int) -> None:
    console.print(f"encryption: record {single:,}, dispatch {dispatched:,}, x{repeats}")
    times: dict[tuple[str, str], list[float]] = {}
    modes = ("off", "known", "new")
    for _ in range(repeats):
        for mode in modes:
            times.setdefault(("record", mode), []).append(_record(mode, single))
            times.setdefault(("dispatch", mode), []).append(_dispatch(mode, dispatched))
    rows = []
    label = {"off": "encryption off", "known": "on, known subjects", "new": "on, new subjects"}
    for path, count in (("record", single), ("dispatch", dispatched)):
        off = median(times[(path, "off")])
        for mode in modes:
            took = median(times[(path, mode)])
            note = "" if mode == "off" else f"{(took / off - 1) * 100:+.1f}% time vs off"
            rows.append(Measurement(f"{path}(): {label[mode]}", count, took, note=note))
    report(
        "encryption",
        rows,
        baseline="record(): encryption off",
        extra={"events": f"{single:,} / {dispatched:,}", "repeats": repeats},
    )
