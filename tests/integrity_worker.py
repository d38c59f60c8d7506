"""Run by the follower crash test in a subprocess: follow the store in small batches, signing
often, until killed (``follow``)."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from auditcore import AuditCore, Settings
from auditcore.integrity.settings import IntegritySettings


def main(event_store: str, signing_key: str, checkpoint_dir: str) -> None:
    integrity = IntegritySettings(
        signing_key=Path(signing_key),
        checkpoint_dir=Path(checkpoint_dir),
        checkpoint_interval=0.05,
        checkpoint_events=100,
    )
    with AuditCore(Settings(event_store), integrity=integrity) as audit:
        follower = audit.integrity.follower(batch_size=7)
        announced = []

        def announce(_: int) -> None:
            if not announced:  # the lock is held and the first step is done: kill me now
                announced.append(True)
                print("following", flush=True)

        follower.follow(threading.Event(), on_step=announce)


if __name__ == "__main__":
    main(*sys.argv[1:4])
