"""Run by the retention crash test in a subprocess: archive and prune, in small batches, as
of ``now`` (an ISO time), until done or killed."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from auditcore import AuditCore, Settings
from auditcore.integrity.settings import IntegritySettings
from auditcore.lifecycle.retention import Retention


def main(event_store: str, clickhouse: str, signing_key: str, archive_dir: str, now: str) -> None:
    integrity = IntegritySettings(signing_key=Path(signing_key))
    with AuditCore(Settings(event_store, clickhouse), integrity=integrity) as audit:
        retention = Retention(audit, Path(archive_dir))
        print("pruning", flush=True)
        retention.run(now=datetime.fromisoformat(now), batch_size=5, pause=0.001)
        print("done", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:6])
