"""Progress bars for long work over events: count, bar, events/s and time left."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class EventsProgress:
    """One bar per piece of work; ``track`` returns the function that advances it.

    Work tracked here runs one piece after another, so each bar's rate counts only the time
    since the previous advance of any bar (not the time other bars took).
    """

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            TextColumn("{task.description:<16}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10} events/s"),
            TimeRemainingColumn(),
            console=console,
        )
        self._last_advance = time.monotonic()

    def __enter__(self) -> Self:
        self._progress.__enter__()
        self._last_advance = time.monotonic()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.__exit__(exc_type, exc, traceback)

    def track(self, description: str, total: int | None) -> Callable[[int], None]:
        # A bar with nothing to do would sit at "0/0" until the work ends: it appears only
        # once there is something to count (then with an unknown total, as there was none).
        nothing = total == 0
        task = self._progress.add_task(description, total=total, rate="-", visible=not nothing)
        busy = 0.0

        def advance(count: int) -> None:
            nonlocal busy
            now = time.monotonic()
            busy += now - self._last_advance
            self._last_advance = now
            self._progress.advance(task, count)
            done = self._progress.tasks[task].completed
            self._progress.update(task, rate=f"{done / max(busy, 1e-6):,.0f}")
            if nothing and count:
                self._progress.update(task, total=None, visible=True)

        return advance
