"""Runs the processors of every read model: schema first, then catch-up or live following.

Read models are independent: a catch-up runs each to the end (or to its failure) whatever
the others do and then names the ones that failed; following, each processor runs on its
own (own thread, own ClickHouse client) and never gives up: any error (ClickHouse or the
store away, a refused statement) is logged in one line and retried with backoff (1 s
doubling to 30 s), from creating its tables onwards, until ``stop`` is set.
One process writes a read model at a time (``auditcore.projection.coordination``): a
follower stands by while another process follows the same read model, and a catch-up
leaves such a read model to that process.

A read model is ``stalled`` when events have waited more than ``stall_after`` seconds and
its position has not moved for as long: judged from what ClickHouse and the store hold, so
any process can see a follower in another process (or none at all) not making progress.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.connection import ClickHouseTarget
from auditcore.clickhouse.ddl import BOOKKEEPING, create_missing
from auditcore.errors import CatchUpFailedError, FollowedElsewhereError, one_line
from auditcore.projection import deadletters
from auditcore.projection.coordination import THIS_PROCESS, Coordinator, Exclusive, LockLostError
from auditcore.projection.deadletters import DeadLetter, LetterStatus
from auditcore.projection.log import LogReader
from auditcore.projection.processor import Processor
from auditcore.projection.rebuild import retry
from auditcore.projection.tracking import read_tracking, table_keys
from auditcore.readmodel.registry import ReadModelRegistry
from auditcore.store.application import AuditApplication

logger = logging.getLogger(__name__)

Progress = Callable[[str, int], None]
"""Called with (read model name, events just processed)."""


@dataclass(frozen=True)
class ProcessorStatus:
    name: str
    table: str
    position: int
    head: int
    fingerprint_matches: bool
    updated_at: datetime | None
    last_error: str | None = None
    dead_letters: int = 0
    """Events parked because this read model cannot hold them (the others are in)."""
    behind_seconds: float = 0.0
    """How long the oldest event it has not yet processed has waited (0 when caught up)."""
    stalled: bool = False
    """Events waiting and no progress, both for longer than the runner's ``stall_after``."""
    followed_by: str | None = None
    """``this process``, the process that follows it (``pid N on HOST``), or None."""

    @property
    def followed_elsewhere(self) -> bool:
        return self.followed_by not in (None, THIS_PROCESS)

    @property
    def lag(self) -> int:
        return max(0, self.head - self.position)

    @property
    def state(self) -> str:
        """``failing`` (an error in this process, or its definition changed), ``stalled``
        (not moving on, cause unknown here), ``degraded`` (moving on, some events parked) or
        ``ok``."""
        if self.last_error or not self.fingerprint_matches:
            return "failing"
        if self.stalled:
            return "stalled"
        return "degraded" if self.dead_letters else "ok"


class ProjectionRunner:
    """The read side's operator: migrate, catch up, follow, report."""

    def __init__(
        self,
        app: AuditApplication,
        target: ClickHouseTarget,
        models: ReadModelRegistry,
        *,
        batch_size: int = 20_000,
        stall_after: float = 60.0,
        standby_poll: float = 2.0,
    ) -> None:
        self.app = app
        self.target = target
        self.models = models
        self.batch_size = batch_size
        self.stall_after = stall_after
        self.standby_poll = standby_poll
        """How often a follower standing by tries to take over."""
        self._errors: dict[str, str] = {}
        self.coordinator = Coordinator(app.settings, target, [model.name for model in models])
        self.elsewhere: dict[str, str] = {}
        """Read models the last catch-up left to the process that follows them."""

    def exclusive(self, name: str) -> Exclusive:
        """A reusable context in which this process alone writes ``name``'s table (raises
        ``FollowedElsewhereError`` when another process follows it)."""
        return self.coordinator.exclusive(self.models.get(name).name)

    def close(self) -> None:
        self.coordinator.close()

    def migrate(self, client: Client) -> list[str]:
        """Create what is missing: the tracking and dead-letter tables and each read model's
        table; return the read models' tables (created or already there)."""
        tables = {model.table_name: model.table for model in self.models}
        create_missing(client, self.target.ddl, {**BOOKKEEPING, **tables})
        return list(tables)

    def processors(self, client: Client | None = None) -> list[Processor]:
        return [
            Processor(model, self.app, self.target, batch_size=self.batch_size, client=client)
            for model in self.models
        ]

    def catch_up(self, client: Client, progress: Progress | None = None) -> dict[str, int]:
        """Bring every read model up to the store's current end, one after another; return
        the events each processed. A read model that fails does not stop the others: once
        all have run, ``CatchUpFailedError`` names the failed ones (and what the others did).
        """
        self.migrate(client)
        done: dict[str, int] = {}
        failed: dict[str, str] = {}
        self.elsewhere = {}
        for processor in self.processors(client):
            name = processor.model.name
            counted = 0

            def report(count: int, name: str = name) -> None:
                nonlocal counted
                counted += count
                if progress:
                    progress(name, count)

            try:
                with self.exclusive(name):
                    done[name] = processor.catch_up(report)
                self._errors.pop(name, None)
            except FollowedElsewhereError as error:  # that process keeps it current
                self.elsewhere[name] = error.holder or "another process"
            except Exception as error:  # reported to the caller, with the others' results
                done[name] = counted
                failed[name] = self._errors[name] = f"{type(error).__name__}: {error}"
        if failed:
            raise CatchUpFailedError(done, failed)
        return done

    def follow(self, stop: threading.Event, *, retry_delay: float = 1.0) -> list[threading.Thread]:
        """Start one thread per read model that follows the store until ``stop`` is set (each
        creates what is missing first, inside its retry loop: ClickHouse may be away now)."""
        threads = []
        for model in self.models:
            thread = threading.Thread(
                target=self._follow_one,
                args=(model.name, stop, retry_delay),
                name=f"auditcore-{model.name}",
                daemon=True,
            )
            thread.start()
            threads.append(thread)
        return threads

    def _follow_one(self, name: str, stop: threading.Event, retry_delay: float) -> None:
        """Hold ``name``'s lock (standing by while another process holds it) and follow."""
        lock = self.coordinator.lock(name)
        delay = retry_delay
        try:
            while not stop.is_set():
                try:
                    acquired = lock.acquire()
                except Exception as error:  # the store is away: as any failure, retried
                    self._errors[name] = f"{type(error).__name__}: {one_line(error)}"
                    logger.warning(
                        "read model %s: cannot take its lock: %s", name, self._errors[name]
                    )
                    stop.wait(delay)
                    delay = min(delay * 2, 30.0)
                    continue
                if not acquired:
                    self._errors.pop(name, None)
                    stop.wait(self.standby_poll)
                    continue
                with self.coordinator.following(name, lock) as hold:
                    self._follow_holding(name, stop, retry_delay, hold)
        finally:
            lock.close()

    def _follow_holding(
        self,
        name: str,
        stop: threading.Event,
        retry_delay: float,
        hold: AbstractContextManager[None],
    ) -> None:
        """Follow ``name`` (each batch inside ``hold``) until ``stop``, or until the lock
        is lost."""
        delay = retry_delay

        def recovered(_: int) -> None:
            nonlocal delay
            if self._errors.pop(name, None) is not None:
                logger.warning("read model %s: recovered", name)
            delay = retry_delay

        while not stop.is_set():
            processor = Processor(
                self.models.get(name), self.app, self.target, batch_size=self.batch_size
            )
            try:
                self.migrate(processor.client)
                # Healthy again as soon as a step goes through, even with nothing new to read.
                processor.follow(stop, on_step=recovered, guard=hold)
            except LockLostError:
                logger.warning("read model %s: lost its lock; standing by", name)
                return
            except Exception as error:  # any error: logged, retried; never ends the thread
                self._errors[name] = f"{type(error).__name__}: {one_line(error)}"
                logger.warning(
                    "read model %s: %s; retrying in %.0fs", name, self._errors[name], delay
                )
                logger.debug("read model %s failed", name, exc_info=True)
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
            finally:
                processor.close()

    def status(self, client: Client) -> list[ProcessorStatus]:
        head = self.app.recorder.max_notification_id() or 0
        keys = table_keys(client, [model.table_name for model in self.models])
        by_key = read_tracking(client, list(keys.values()))
        parked = deadletters.parked_counts(client, list(keys.values()))
        now = datetime.now(UTC)
        log = LogReader(self.app)
        statuses = []
        for model in self.models:
            key = keys.get(model.table_name, "")
            position = by_key.get(key)
            at = position.position if position else 0
            waiting = _oldest_waiting(log, at) if at < head else None
            behind = (now - waiting).total_seconds() if waiting else 0.0
            # How long since it last moved (or, never having moved, since it had work).
            moved = position.updated_at if position else None
            idle = (now - moved).total_seconds() if moved else behind
            statuses.append(
                ProcessorStatus(
                    name=model.name,
                    table=model.table_name,
                    position=position.position if position else 0,
                    head=head,
                    fingerprint_matches=position is None
                    or position.fingerprint == model.fingerprint(),
                    updated_at=position.updated_at if position else None,
                    last_error=self._errors.get(model.name),
                    dead_letters=parked.get(key, 0),
                    behind_seconds=max(0.0, behind),
                    stalled=min(behind, idle) > self.stall_after,
                    followed_by=self.coordinator.followed_by(model.name),
                )
            )
        return statuses

    # Dead letters.

    def dead_letters(
        self,
        client: Client,
        names: list[str] | None = None,
        *,
        status: LetterStatus | None = LetterStatus.PARKED,
        workspace_id: str | None = None,
        limit: int | None = None,
    ) -> list[DeadLetter]:
        """Events parked by the read models named (default: all), oldest first per model."""
        models = self.models.only(names)
        keys = table_keys(client, [model.table_name for model in models])
        return deadletters.letters(
            client, list(keys.values()), status=status, workspace_id=workspace_id, limit=limit
        )

    def retry_dead_letters(self, client: Client, letters: list[DeadLetter]) -> list[DeadLetter]:
        """Project parked events again (their streams, or a roll-up whole); return the
        letters still refused. The others are marked retried."""
        still: list[DeadLetter] = []
        for model in self.models:
            mine = [letter for letter in letters if letter.model == model.name]
            if mine:
                still += retry(
                    model, self.app, self.target, client, mine, guard=self.exclusive(model.name)
                )
        return still

    def skip_dead_letters(self, client: Client, letters: list[DeadLetter]) -> None:
        """Leave parked events out for good (their letters stay, marked skipped)."""
        deadletters.resolve(client, letters, LetterStatus.SKIPPED)


def _oldest_waiting(log: LogReader, position: int) -> datetime | None:
    """When the first event after ``position`` was recorded (None if there is none)."""
    first = log.after(position, 1)
    if not first:
        return None
    return datetime.fromisoformat(orjson.loads(first[0].state)["recorded_at"])
