"""Drain buffered audit events when the process is asked to stop (SIGTERM)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType

_drains: list[Callable[[], object]] = []
_installed = False


def drain_on_sigterm(drain: Callable[[], object]) -> None:
    """Run ``drain`` on SIGTERM, then whatever handled SIGTERM before (by default: exit).

    Signal handlers can only be set from the main thread; elsewhere the atexit and
    context-manager paths still drain.
    """
    global _installed  # noqa: PLW0603 - one process-wide handler for every AuditCore
    _drains.append(drain)
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        for pending in list(_drains):
            pending()
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    _installed = True


def stop_draining(drain: Callable[[], object]) -> None:
    """Forget a drain registered with ``drain_on_sigterm`` (its owner has closed)."""
    if drain in _drains:
        _drains.remove(drain)
