"""Run by tests in subprocesses: dispatch events, then leave in a given way."""

from __future__ import annotations

import os
import signal
import sys

from auditcore import AuditCore, Settings


def main(event_store: str, count: str, ending: str, tag: str = "w") -> None:
    audit = AuditCore(Settings(event_store))
    for n in range(int(count)):
        audit.dispatch(
            "incident.comment_added",
            workspace_id="acme",
            metadata={"body": f"{tag} {n}"},
            actor={"id": tag},
        )
    print("dispatched", flush=True)
    leave(audit, ending)


def leave(audit: AuditCore, ending: str) -> None:
    """Stop as asked: "sigterm", "close", or "exit" (just return: atexit must drain)."""
    if ending == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
    elif ending == "close":
        audit.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
