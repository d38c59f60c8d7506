"""Tamper evidence: how fast the integrity follower keeps the Merkle logs up with the store,
and how fast ``auditcore verify`` checks the whole store — each beside a plain decoded read of
the same log (the processors' reader and decoder, writing nothing), in the same run."""

from __future__ import annotations

import tempfile
from pathlib import Path

from auditcore import AuditCore, Settings
from auditcore.integrity.note import SignerKey
from auditcore.integrity.settings import IntegritySettings
from benchmarks.catchup import plain_read
from benchmarks.common import (
    Measurement,
    bench_registry,
    console,
    fresh_database,
    populate,
    report,
    timed,
    timed_result,
)


def run(events: int, workspaces: int = 20) -> list[Measurement]:
    with fresh_database("ac_bench_integrity") as url, tempfile.TemporaryDirectory() as keys:
        key_file = Path(keys) / "log.key"
        key_file.write_text(SignerKey.generate("bench.example").encode())
        integrity = IntegritySettings(signing_key=key_file)
        with AuditCore(Settings(url), registry=bench_registry(), integrity=integrity) as audit:
            populate(audit, events, workspaces=workspaces)
            console.print("plain decoded read …")
            count, seconds = timed(lambda: plain_read(audit))
            ceiling = Measurement("plain decoded read of the log (baseline)", count, seconds)
            console.print("integrity follower catch-up …")
            follower = audit.integrity.follower()
            count, seconds = timed(follower.catch_up)
            follow = Measurement(
                "integrity follower: leaves, nodes and position, one transaction per "
                f"{follower.batch_size:,} events, from position 0",
                count,
                seconds,
            )
            signed = follower.checkpoint()
            console.print("auditcore verify …")
            result, seconds = timed_result(audit.integrity.verify)
            assert result.ok, [problem.describe() for problem in result.problems[:3]]
            checked = Measurement(
                f"auditcore verify: every leaf recomputed, every node and the "
                f"{sum(c.checkpoints for c in result.workspaces.values())} checkpoints checked",
                result.events,
                seconds,
            )
            rows = [ceiling, follow, checked]
            for row in rows[1:]:
                row.note = f"{row.rate / ceiling.rate:.0%} of the plain read"
            report(
                "integrity — Merkle logs and verify",
                rows,
                baseline=ceiling.name,
                extra={"events": events, "workspaces": workspaces, "checkpoints": len(signed)},
            )
            return rows
