"""The integrity follower: appends every stored event to its workspace's Merkle log, in the
store's commit order, and signs checkpoints of the logs that changed.

It reads the log with the processors' ``LogReader`` and wakes on the same ``Wakeup`` (LISTEN /
NOTIFY on PostgreSQL, a short poll on SQLite), with its own position kept in the store's
database. One follower appends at a time (a lock in the database, or a file lock beside a
SQLite store); another one started meanwhile waits as a standby.

Failure semantics: each batch's leaves, nodes, tree heads and the new position are written in
one transaction, guarded by a compare-and-set on the position (``IntegrityLog.append``), so a
crash at any instant neither skips nor doubles a leaf: the next start resumes after the last
committed batch, from the heads it committed with it. While one batch is written the next is
read and hashed, never more than one ahead; if a write fails, the batch hashed after it is
dropped and everything is reloaded from the database. Checkpoints are signed after the batches
they cover are committed (one transaction for all of one round's checkpoints); a crash in
between only delays them: at start, every log larger than its latest checkpoint is due for
one. A stopping follower signs what is due before it returns. Publishing a checkpoint elsewhere
happens after it is stored; a failed publish is retried with the next round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from auditcore.errors import AuditcoreError
from auditcore.integrity.leaf import event_leaf_hash, field_digests, read_state
from auditcore.integrity.log import (
    Batch,
    IntegrityLog,
    Leaf,
    StoredCheckpoint,
    StoredNode,
    TreeHead,
)
from auditcore.integrity.merkle import CompactRange, perfect_subtrees
from auditcore.integrity.note import Checkpoint, SignerKey
from auditcore.integrity.publish import CheckpointPublisher
from auditcore.projection.log import LoggedEvent, LogReader
from auditcore.projection.wakeup import wakeup_for
from auditcore.store.application import AuditApplication

logger = logging.getLogger(__name__)


class DamagedLogError(AuditcoreError):
    """The integrity tables contradict themselves; ``auditcore verify`` says where."""


@dataclass(frozen=True)
class _InFlight:
    future: Future[bool]
    batch: Batch
    workspaces: set[str]
    count: int


@dataclass
class FollowerStatus:
    state: str = "starting"
    """starting · following · standby (another follower holds the lock) · failing · stopped"""
    position: int = 0
    last_checkpoint_at: float | None = None
    last_error: str | None = None


class IntegrityFollower:
    """Not thread-safe: one thread runs one follower."""

    def __init__(
        self,
        app: AuditApplication,
        log: IntegrityLog,
        *,
        signer: SignerKey | None = None,
        publishers: Sequence[CheckpointPublisher] = (),
        checkpoint_interval: float = 60.0,
        checkpoint_events: int = 10_000,
        batch_size: int = 10_000,
    ) -> None:
        self.app = app
        self.log = log
        self.reader = LogReader(app)
        self.signer = signer
        self.publishers = list(publishers)
        self.checkpoint_interval = checkpoint_interval
        self.checkpoint_events = checkpoint_events
        self.batch_size = batch_size
        self.status = FollowerStatus()
        self.position = 0
        self._sizes: dict[str, int] = {}
        self._trees: dict[str, CompactRange] = {}
        self._due: set[str] = set()
        self._events_since_checkpoint = 0
        self._last_checkpoint = time.monotonic()
        self._resumed = False
        self._computed = 0
        """The store position of the last event handed to the writer."""
        self._in_flight: _InFlight | None = None
        self._writer: ThreadPoolExecutor | None = None

    # Appending.

    def resume(self) -> int:
        """Start over from what the database holds (after a start, or a lost race)."""
        self._in_flight = None
        self.position = self._computed = self.log.position()
        heads = self.log.heads()
        self._sizes = {workspace: head.size for workspace, head in heads.items()}
        self._trees.clear()
        checkpointed = {w: c.size for w, c in self.log.latest_checkpoints().items()}
        self._due = {w for w, size in self._sizes.items() if size > checkpointed.get(w, 0)}
        self._resumed = True
        self.status.position = self.position
        return self.position

    def step(self) -> int:
        """Compute the next batch and hand it to the writer; return how many events it holds
        (0 once caught up and everything handed over is committed).

        The batch before is committed first: one batch is written while the next one is read
        and hashed, and never more than one, so a failed write costs at most the batch
        computed after it (recomputed after ``resume``).
        """
        if not self._resumed:
            self.resume()
        events = self.reader.after(self._computed, self.batch_size)
        if not events:
            self.close()
            return 0
        batch, trees = self._compute(events)
        if not self._settle():
            return 0
        self.checkpoint_if_due()  # exactly the committed batches, before the next one goes
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="auditcore-integrity-writer")
        future = self._writer.submit(self.log.append, self.position, batch)
        self._in_flight = _InFlight(future, batch, set(trees), len(events))
        self._computed = batch.position
        return len(events)

    def _compute(self, events: Sequence[LoggedEvent]) -> tuple[Batch, dict[str, CompactRange]]:
        trees: dict[str, CompactRange] = {}
        leaves: list[Leaf] = []
        nodes: list[StoredNode] = []
        for event in events:
            source = read_state(event.state)
            workspace = source.workspace_id
            tree = trees.get(workspace)
            if tree is None:
                tree = trees[workspace] = self._tree(workspace).copy()
            index = tree.size
            hashed = event_leaf_hash(
                index, event.stream_id, event.version, event.action, event.state
            )
            leaves.append(
                Leaf(
                    workspace,
                    index,
                    hashed,
                    event.position,
                    source.event_id,
                    field_digests(event.stream_id, event.version, event.action, source.state),
                )
            )
            nodes += [
                StoredNode(workspace, level, node_index, node, event.position)
                for level, node_index, node in tree.append(hashed)
            ]
        now = time.time()
        last_of = {leaf.workspace_id: leaf.position for leaf in leaves}
        heads = [
            TreeHead(workspace, tree.size, tree.root(), last_of[workspace], now)
            for workspace, tree in trees.items()
        ]
        # The next batch grows from these (if this one fails to commit, ``resume`` reloads).
        self._trees.update(trees)
        return Batch(events[-1].position, leaves, nodes, heads), trees

    def _settle(self) -> bool:
        """Wait for the batch being written; False if it could not be appended because
        another follower moved the log on (then everything is reloaded from the database)."""
        flight, self._in_flight = self._in_flight, None
        if flight is None:
            return True
        try:
            appended = flight.future.result()
        except BaseException:
            self._resumed = False  # start over from what the database holds
            raise
        if not appended:
            logger.warning("another integrity follower moved the log on; resuming from it")
            self.resume()
            return False
        self._due.update(flight.workspaces)
        self._events_since_checkpoint += flight.count
        self.position = self.status.position = flight.batch.position
        return True

    def close(self) -> None:
        """Finish the batch being written, and let the writer thread go."""
        try:
            self._settle()
        finally:
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None

    def _tree(self, workspace: str) -> CompactRange:
        tree = self._trees.get(workspace)
        if tree is not None:
            return tree
        size = self._sizes.get(workspace, 0)
        peaks = perfect_subtrees(0, size)
        found = self.log.node_hashes(workspace, peaks) if size else {}
        if len(found) != len(peaks):
            raise DamagedLogError(
                f"the Merkle log of workspace {workspace!r} lacks nodes of its {size} leaves; "
                "run `auditcore verify` to see what was changed"
            )
        tree = CompactRange(size, [found[peak] for peak in peaks])
        head = self.log.heads(workspace).get(workspace)
        if head is not None and head.root != tree.root():
            raise DamagedLogError(
                f"the Merkle log of workspace {workspace!r} does not match its recorded root; "
                "run `auditcore verify` to see what was changed"
            )
        self._trees[workspace] = tree
        return tree

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        total = 0
        while count := self.step():
            total += count
            if progress:
                progress(count)
            self.checkpoint_if_due()
        return total

    # Checkpoints.

    def checkpoint_if_due(self) -> list[StoredCheckpoint]:
        if not self._due:
            return []
        elapsed = time.monotonic() - self._last_checkpoint
        if (
            self._events_since_checkpoint < self.checkpoint_events
            and elapsed < self.checkpoint_interval
        ):
            return []
        return self.checkpoint()

    def checkpoint(self) -> list[StoredCheckpoint]:
        """Sign, store and publish a checkpoint of every log that grew since its last one."""
        if not self._resumed:
            self.resume()
        self._settle()
        self._last_checkpoint = time.monotonic()
        self._events_since_checkpoint = 0
        if self.signer is None or not self._due:
            return []
        heads = self.log.heads()
        now = datetime.now(UTC).replace(microsecond=0)
        made = []
        for workspace in sorted(self._due):
            head = heads.get(workspace)
            if head is None:
                continue
            signer = self.signer.for_log(workspace)
            note = Checkpoint(signer.name, head.size, head.root, now).sign(signer)
            made.append(
                StoredCheckpoint(
                    workspace,
                    head.size,
                    head.root,
                    int(now.timestamp()),
                    signer.name,
                    signer.verifier().key_id,
                    note,
                )
            )
        self.log.add_checkpoints(made)
        self._due.clear()
        self.status.last_checkpoint_at = time.time()
        self._publish(made)
        return made

    def _publish(self, checkpoints: list[StoredCheckpoint]) -> None:
        for publisher in self.publishers:
            try:
                publisher.publish(checkpoints)
            except Exception:
                logger.exception("publishing checkpoints to %s failed", publisher.describe())

    # Following.

    def follow(
        self,
        stop: threading.Event,
        *,
        poll: float = 0.2,
        linger: float = 0.05,
        standby_poll: float = 2.0,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        """Hold the follower lock (waiting as a standby while another process holds it),
        catch up, then follow new events until ``stop`` is set; sign what is due on the way
        out."""
        lock = self.log.lock()
        try:
            while not lock.acquire():
                self.status.state = "standby"
                if stop.wait(standby_poll):
                    return
            self.status.state = "following"
            self.resume()
            wakeup = wakeup_for(self.app, stop, poll)
            try:
                while not stop.is_set():
                    count = self.step()
                    self.checkpoint_if_due()
                    if on_step:
                        on_step(count)
                    if count:
                        continue
                    wakeup.wait(timeout=min(1.0, self.checkpoint_interval))
                    stop.wait(linger)
                self.checkpoint()
            finally:
                wakeup.close()
                self.close()
        finally:
            lock.close()
            self.status.state = "stopped"


def follow_with_retries(
    make: Callable[[], IntegrityFollower],
    stop: threading.Event,
    status: FollowerStatus,
    *,
    retry_delay: float = 1.0,
) -> None:
    """Run followers until ``stop``: one that fails is replaced after a backoff, its error
    kept in ``status``."""
    delay = retry_delay
    while not stop.is_set():

        def recovered(_: int) -> None:
            nonlocal delay
            status.last_error, delay = None, retry_delay

        try:
            follower = make()
            follower.status = status
            follower.follow(stop, on_step=recovered)
        except Exception as error:
            status.state, status.last_error = "failing", f"{type(error).__name__}: {error}"
            logger.exception("the integrity follower failed; retrying in %.1fs", delay)
            stop.wait(delay)
            delay = min(delay * 2, 30.0)
