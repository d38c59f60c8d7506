"""Run by tests in a subprocess: warm up, wait for the test to cut the store off, dispatch,
then stop in a given way (SIGTERM, interpreter exit, or close())."""

from __future__ import annotations

import sys

from auditcore import AuditCore, DispatchSettings, Settings
from tests.dispatch_worker import leave


def main(event_store: str, ending: str) -> None:
    audit = AuditCore(
        Settings(f"{event_store}&connect_timeout=1"),
        # Reports to the control database stay on: it is unreachable too.
        dispatch=DispatchSettings(close_timeout=2.0, in_flight_wait=2.0),
    )
    for n in range(10):
        audit.dispatch("incident.comment_added", workspace_id="acme", metadata={"body": f"{n}"})
    assert audit.flush(timeout=30)
    print("warm", flush=True)
    sys.stdin.readline()  # the store is unreachable from now on
    for n in range(2000):
        audit.dispatch("incident.comment_added", workspace_id="acme", metadata={"body": f"{n}"})
    leave(audit, ending)


if __name__ == "__main__":
    main(*sys.argv[1:])
