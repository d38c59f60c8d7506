"""Retention on its own: a pass every ``interval`` seconds in a background thread (``serve``
runs one unless ``--no-retention``; ``retention run --follow`` runs the same loop in the
foreground).

Failure semantics: a pass that fails (the database or the archive store unreachable, an
archive that does not check) is reported and the next pass runs at its time: everything a
pass does is resumable (``retention``). A pass skips at once when another process is running
retention on the store (``runlock``). Stopping asks the running pass to stop between deletion
batches; what it leaves half done, the next pass finishes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from auditcore.lifecycle.retention import Retention, RunReport


class RetentionSchedule:
    """Runs ``retention`` every ``interval`` seconds (the first pass at once) until stopped."""

    def __init__(
        self,
        retention: Retention,
        interval: float,
        *,
        batch_size: int = 1_000,
        pause: float = 0.0,
        on_report: Callable[[RunReport], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.retention = retention
        self.interval = interval
        self.batch_size, self.pause = batch_size, pause
        self.on_report, self.on_error = on_report, on_error
        self.clock = clock
        self.passes = 0
        self._thread = threading.Thread(target=self.loop, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self.retention.stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def loop(self) -> None:
        """Pass after pass until stopped (in the caller's thread: ``--follow``)."""
        while not self.retention.stopping.is_set():
            self.run_once()
            if self.retention.stopping.wait(self.interval):
                break

    def run_once(self) -> RunReport | None:
        try:
            report = self.retention.run(
                now=self.clock() if self.clock else None,
                batch_size=self.batch_size,
                pause=self.pause,
                wait=0.0,
            )
        except Exception as error:  # reported; the next pass resumes what it left
            if self.on_error:
                self.on_error(error)
            return None
        finally:
            self.passes += 1
        if self.on_report:
            self.on_report(report)
        return report
