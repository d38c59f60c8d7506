"""Run by the log-stream crash test in a subprocess: deliver one stream in small batches until
killed; print ``following`` once the first batch is delivered (kills may begin)."""

from __future__ import annotations

import sys
import threading

from auditcore import AuditCore, Settings
from auditcore.streams.base import Batch
from auditcore.streams.config import stream_configs
from auditcore.streams.streamer import StreamFollower, Tuning


def main(event_store: str, stream_id: str) -> None:
    with AuditCore(Settings(event_store)) as audit:
        configs = stream_configs(audit)
        announced: list[bool] = []

        def announce(_: Batch) -> None:
            if not announced:
                announced.append(True)
                print("following", flush=True)

        tuning = Tuning(read_batch=7, poll=0.05, retry_initial=0.02, retry_max=0.1)
        model = audit.read_models.get("audit_events")
        follower = StreamFollower(audit.app, configs, model, stream_id, tuning, announce)
        follower.run(threading.Event())


if __name__ == "__main__":
    main(*sys.argv[1:3])
