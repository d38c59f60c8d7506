"""``auditcore verify``: recompute every leaf from the store and check it against the logs and
every signed checkpoint.

One pass over the store in its global order (the processors' ``LogReader``), beside the stored
leaves and nodes of the same store positions:

- each event's leaf is recomputed from its stored bytes and compared with the stored leaf at
  its store position: a difference is an edited event (and, from the leaf's field checksums,
  which fields changed), or a reordered one (the event is logged at another position);
- a stored leaf whose event is gone is a deleted event; an event at a position the follower
  has passed that has no leaf was inserted behind the log's back (events after the follower's
  position are simply not logged yet: counted as pending);
- each workspace's tree is rebuilt from its stored leaves, every node the follower stored is
  compared with the rebuilt one, and the root at every checkpoint's size with the signed root;
- every stored checkpoint's signature is checked with the trusted keys, and its columns with
  its signed text; checkpoints given from outside (files, the publishing directory) are checked
  the same way, and one larger than the log shows newest events deleted or a store rolled back.

Memory stays flat: a workspace's tree is held as its compact range (O(log n) hashes).
"""

from __future__ import annotations

import struct
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from auditcore.integrity.leaf import (
    UNREADABLE,
    changed_fields,
    event_leaf_hash,
    field_digests,
    read_state,
)
from auditcore.integrity.log import IntegrityLog, Leaf, StoredCheckpoint, StoredNode
from auditcore.integrity.merkle import CompactRange
from auditcore.integrity.note import Checkpoint, Note, NoteError, VerifierKey
from auditcore.projection.log import LoggedEvent, LogReader
from auditcore.store.application import AuditApplication

MAX_PROBLEMS = 1_000


@dataclass(frozen=True)
class Problem:
    """One divergence between the store, its logs and the signed checkpoints."""

    kind: str
    """edited · reordered · deleted · inserted · checkpoint · truncated · leaves · nodes · tree"""
    workspace_id: str | None
    index: int | None
    """The position in the workspace's log."""
    event_id: str | None
    detail: str
    store_position: int | None = None

    def describe(self) -> str:
        where = []
        if self.workspace_id is not None:
            where.append(f"workspace {self.workspace_id}")
        if self.index is not None:
            where.append(f"position {self.index}")
        if self.event_id:
            where.append(f"event {self.event_id}")
        if self.store_position is not None:
            where.append(f"store position {self.store_position}")
        return f"{self.kind}: {', '.join(where)}: {self.detail}"


@dataclass
class WorkspaceCount:
    leaves: int = 0
    verified: int = 0
    pending: int = 0
    pruned: int = 0
    """Logged events gone from the store inside an archived range (retention)."""
    checkpoints: int = 0
    latest_checkpoint: int = 0
    latest_signed_at: datetime | None = None


@dataclass
class VerifyReport:
    events: int = 0
    workspaces: dict[str, WorkspaceCount] = field(
        default_factory=lambda: defaultdict(WorkspaceCount)
    )
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0
    warnings: list[str] = field(default_factory=list)
    follower_position: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.more_problems += 1


@dataclass(frozen=True)
class OutsideCheckpoint:
    """A checkpoint from outside the database: a file, the publishing directory."""

    source: str
    note: str


@dataclass
class _Expected:
    root: bytes
    label: str


@dataclass
class _Tree:
    range: CompactRange = field(default_factory=CompactRange)
    broken: bool = False


class Verifier:
    def __init__(
        self,
        app: AuditApplication,
        log: IntegrityLog,
        keys: Sequence[VerifierKey],
        *,
        workspace_id: str | None = None,
        outside: Sequence[OutsideCheckpoint] = (),
        batch_size: int = 20_000,
        pruned: Mapping[str, Sequence[tuple[int, int]]] | None = None,
    ) -> None:
        self.app = app
        self.log = log
        self.keys = list(keys)
        self.workspace_id = workspace_id
        self.outside = list(outside)
        self.batch_size = batch_size
        self.pruned = pruned or {}
        """Per workspace, the log ranges ``[from, to)`` archived by retention: their events
        may be gone from the store (their retained leaves still build the tree)."""
        self.reader = LogReader(app)
        self.report = VerifyReport()
        self._expected: dict[str, dict[int, list[_Expected]]] = defaultdict(
            lambda: defaultdict(list)
        )
        self._trees: dict[str, _Tree] = defaultdict(_Tree)
        self._seen: set[str] = set()

    def _mine(self, workspace_id: str) -> bool:
        return self.workspace_id is None or workspace_id == self.workspace_id

    def run(self, progress: Callable[[int], None] | None = None) -> VerifyReport:
        report = self.report
        report.follower_position = self.log.position()
        if not self.keys:
            report.warnings.append(
                "no public key given: checkpoint signatures were not checked (pass "
                "--public-key, or set AUDITCORE_PUBLIC_KEY or AUDITCORE_SIGNING_KEY)"
            )
        for checkpoint in self.log.checkpoints(self.workspace_id):
            self._stored_checkpoint(checkpoint)
        for outside in self.outside:
            self._outside_checkpoint(outside)
        position = 0
        while batch := self._read_after(position):
            last = batch[-1].position
            self._merge(batch, self.log.leaves_between(position, last), position, last)
            report.events += len(batch)
            position = last
            if progress:
                progress(len(batch))
        # Leaves beyond the newest event: the newest events were deleted.
        beyond = self.log.max_leaf_position()
        if beyond > position:
            self._merge([], self.log.leaves_between(position, beyond), position, beyond)
        self._finish()
        return report

    def _read_after(self, position: int) -> Sequence[LoggedEvent]:
        try:
            return self.reader.after(position, self.batch_size)
        except (ValueError, TypeError) as error:
            self.report.add(
                Problem(
                    "unreadable",
                    None,
                    None,
                    None,
                    f"the store cannot be read after this position ({error}): a stored "
                    "event's columns were damaged; nothing after it was checked",
                    position,
                )
            )
            return []

    # Checkpoints.

    def _keys_for(self, workspace_id: str) -> list[VerifierKey]:
        """The trusted keys as given, and as derived for this workspace's log."""
        return [*self.keys, *(key.for_log(workspace_id) for key in self.keys)]

    def _open(self, note_text: str, workspace_id: str) -> Checkpoint:
        note = Note.parse(note_text)
        if self.keys:
            note.verified_by(self._keys_for(workspace_id))
        checkpoint = Checkpoint.parse(note.text)
        if not checkpoint.origin.endswith(f"/{workspace_id}"):
            raise NoteError(
                f"its origin {checkpoint.origin!r} is not workspace {workspace_id}'s log"
            )
        return checkpoint

    def _stored_checkpoint(self, stored: StoredCheckpoint) -> None:
        self._seen.add(stored.note)
        workspace = stored.workspace_id
        when = datetime.fromtimestamp(stored.signed_at, UTC).isoformat()
        label = f"the stored checkpoint of size {stored.size} signed {when}"
        try:
            checkpoint = self._open(stored.note, workspace)
        except NoteError as error:
            self.report.add(
                Problem(
                    "checkpoint", workspace, None, None, f"{label} is altered or forged: {error}"
                )
            )
            return
        signed_at = int(checkpoint.signed_at.timestamp()) if checkpoint.signed_at else None
        if (checkpoint.size, checkpoint.root, signed_at) != (
            stored.size,
            stored.root,
            stored.signed_at,
        ):
            self.report.add(
                Problem(
                    "checkpoint",
                    workspace,
                    None,
                    None,
                    f"{label} was altered: its size, root or time columns differ from its "
                    f"signed text (signed: size {checkpoint.size})",
                )
            )
            return
        count = self.report.workspaces[workspace]
        count.checkpoints += 1
        if checkpoint.size >= count.latest_checkpoint:
            count.latest_checkpoint, count.latest_signed_at = checkpoint.size, checkpoint.signed_at
        self._expected[workspace][checkpoint.size].append(_Expected(checkpoint.root, label))

    def _outside_checkpoint(self, outside: OutsideCheckpoint) -> None:
        if outside.note in self._seen:  # a copy of one already checked
            return
        self._seen.add(outside.note)
        try:
            note = Note.parse(outside.note)
            checkpoint = Checkpoint.parse(note.text)
            workspace = checkpoint.origin.rpartition("/")[2]
            note.verified_by(self._keys_for(workspace))
        except NoteError as error:
            hint = "" if self.keys else " (no public key to check it with: pass --public-key)"
            self.report.add(
                Problem(
                    "checkpoint",
                    None,
                    None,
                    None,
                    f"{outside.source} is not trusted: {error}{hint}",
                )
            )
            return
        if not self._mine(workspace):
            return
        when = checkpoint.signed_at.isoformat() if checkpoint.signed_at else "at an unknown time"
        self._expected[workspace][checkpoint.size].append(
            _Expected(
                checkpoint.root,
                f"the checkpoint of size {checkpoint.size} signed {when} ({outside.source})",
            )
        )

    # The pass over the store.

    def _merge(
        self, events: Sequence[LoggedEvent], leaves: Sequence[Leaf], after: int, up_to: int
    ) -> None:
        nodes: dict[int, list[StoredNode]] = defaultdict(list)
        for node in self.log.nodes_between(after, up_to):
            nodes[node.position].append(node)
        follower = self.report.follower_position
        if [leaf.position for leaf in leaves] == [event.position for event in events]:
            # The usual case: every event logged, every leaf's event there.
            for stored_event, logged_leaf in zip(events, leaves, strict=True):
                if self._mine(logged_leaf.workspace_id):
                    self._compare(stored_event, logged_leaf)
                    self._grow(logged_leaf, nodes.pop(logged_leaf.position, []))
                else:
                    self._foreign(stored_event, logged_leaf)
            self._orphans(nodes)
            return
        logged = {leaf.position: leaf for leaf in leaves}
        stored = {event.position: event for event in events}
        for position in sorted(logged.keys() | stored.keys()):
            event, leaf = stored.get(position), logged.get(position)
            if leaf is None:
                if event is not None:
                    self._unlogged(event, follower)
                continue
            if not self._mine(leaf.workspace_id):
                if event is not None:
                    self._foreign(event, leaf)
                continue
            if event is None:
                self._gone(leaf)
            else:
                self._compare(event, leaf)
            self._grow(leaf, nodes.pop(position, []))
        self._orphans(nodes)

    def _gone(self, leaf: Leaf) -> None:
        """A logged event missing from the store: pruned by retention, or deleted."""
        count = self.report.workspaces[leaf.workspace_id]
        count.leaves += 1
        ranges = self.pruned.get(leaf.workspace_id, ())
        if any(start <= leaf.leaf_index < end for start, end in ranges):
            count.pruned += 1
        else:
            self._at(leaf, "deleted", "the logged event is gone from the store")

    def _orphans(self, nodes: dict[int, list[StoredNode]]) -> None:
        """Stored nodes left over: no leaf at their position completes them."""
        for position, orphans in sorted(nodes.items()):
            for node in orphans:
                if self._mine(node.workspace_id):
                    self.report.add(
                        Problem(
                            "nodes",
                            node.workspace_id,
                            None,
                            None,
                            f"a stored node (level {node.level}, index {node.node_index}) "
                            "belongs to no leaf: the node table was edited",
                            position,
                        )
                    )

    def _foreign(self, event: LoggedEvent, leaf: Leaf) -> None:
        """With ``-w``: another workspace's logged event that now claims this workspace."""
        if self.workspace_id is None:
            return
        try:
            unchanged = leaf.hash == event_leaf_hash(
                leaf.leaf_index, event.stream_id, event.version, event.action, event.state
            )
        except (ValueError, TypeError, struct.error):
            unchanged = False
        if not unchanged and self._mine(read_state(event.state).workspace_id):
            self._at(
                leaf,
                "edited",
                f"this event of workspace {leaf.workspace_id} now claims workspace "
                f"{self.workspace_id}: workspace_id changed",
            )

    def _unlogged(self, event: LoggedEvent, follower: int) -> None:
        source = read_state(event.state)
        if not self._mine(source.workspace_id):
            return
        if event.position > follower:
            self.report.workspaces[source.workspace_id].pending += 1
            return
        self.report.add(
            Problem(
                "inserted",
                source.workspace_id,
                None,
                source.event_id,
                "this event is in the store but in no log: it was inserted behind the log's back",
                event.position,
            )
        )

    def _compare(self, event: LoggedEvent, leaf: Leaf) -> None:
        count = self.report.workspaces[leaf.workspace_id]
        count.leaves += 1
        try:
            recomputed = event_leaf_hash(
                leaf.leaf_index, event.stream_id, event.version, event.action, event.state
            )
        except (ValueError, TypeError, struct.error) as error:
            self._at(leaf, "edited", f"its stored columns are no longer an event's ({error})")
            return
        if recomputed == leaf.hash:
            count.verified += 1
            return
        source = read_state(event.state)
        if source.event_id and source.event_id != leaf.event_id:
            elsewhere = None
            if source.workspace_id != UNREADABLE:
                elsewhere = self.log.leaf_for_event(source.workspace_id, source.event_id)
            if elsewhere is not None:
                self._at(
                    leaf,
                    "reordered",
                    f"this position now holds event {source.event_id}, logged at position "
                    f"{elsewhere.leaf_index} of workspace {elsewhere.workspace_id}",
                )
                return
        fields = changed_fields(
            leaf.fields or self.log.fields_at(leaf.position),
            field_digests(event.stream_id, event.version, event.action, source.state),
        )
        what = ", ".join(fields) if fields else "its stored bytes"
        self._at(leaf, "edited", f"the stored event differs from what was logged: {what} changed")

    def _at(self, leaf: Leaf, kind: str, detail: str, index: int | None = None) -> None:
        """A problem at a leaf (at ``index`` of the leaf's workspace, if not the leaf's)."""
        self.report.add(
            Problem(
                kind,
                leaf.workspace_id,
                leaf.leaf_index if index is None else index,
                leaf.event_id,
                detail,
                leaf.position,
            )
        )

    def _grow(self, leaf: Leaf, stored_nodes: list[StoredNode]) -> None:
        tree = self._trees[leaf.workspace_id]
        if tree.broken:
            return
        if leaf.leaf_index != tree.range.size:
            tree.broken = True
            self._at(
                leaf,
                "leaves",
                f"the log's next leaf row is numbered {leaf.leaf_index}, not {tree.range.size}: "
                "leaf rows were deleted, added or renumbered",
                tree.range.size,
            )
            return
        created = tree.range.append(leaf.hash)
        if created == [node[1:4] for node in stored_nodes]:  # (level, index, hash) all equal
            stored_nodes = []
            created = []
        stored = {(node.level, node.node_index): node.hash for node in stored_nodes}
        for level, index, hashed in created:
            if stored.pop((level, index), None) != hashed:
                self._at(
                    leaf,
                    "nodes",
                    f"the stored node (level {level}, index {index}) is missing or wrong: "
                    "proofs through it would fail",
                )
        for level, index in stored:
            self._at(
                leaf,
                "nodes",
                f"a stored node (level {level}, index {index}) was added to the node table",
            )
        for expected in self._expected.get(leaf.workspace_id, {}).get(tree.range.size, []):
            if tree.range.root() != expected.root:
                self._at(
                    leaf,
                    "checkpoint",
                    f"the log's first {tree.range.size} leaves no longer hash to the root "
                    f"of {expected.label}: logged leaves were rewritten",
                )

    def _finish(self) -> None:
        heads = self.log.heads(self.workspace_id)
        for workspace in sorted(set(heads) | set(self._trees)):
            tree = self._trees.get(workspace) or _Tree()
            head = heads.get(workspace)
            if tree.broken:
                continue
            if head is None or (head.size, head.root) != (tree.range.size, tree.range.root()):
                recorded = f"{head.size} leaves" if head else "nothing"
                self.report.add(
                    Problem(
                        "tree",
                        workspace,
                        None,
                        None,
                        f"the recorded tree head ({recorded}) does not match its "
                        f"{tree.range.size} leaf rows: the trees table was edited",
                    )
                )
        for workspace, sizes in sorted(self._expected.items()):
            tree = self._trees.get(workspace) or _Tree()
            beyond = [
                expected
                for size, expectations in sorted(sizes.items())
                if size > tree.range.size
                for expected in expectations
            ]
            if tree.broken or not beyond:
                continue
            largest = max(sizes)
            others = f" (and {len(beyond) - 1} more checkpoint(s))" if len(beyond) > 1 else ""
            self.report.add(
                Problem(
                    "truncated",
                    workspace,
                    tree.range.size,
                    None,
                    f"{sizes[largest][0].label}{others} covers {largest} events but the log "
                    f"holds only {tree.range.size}: the newest events were deleted, or the "
                    "store was rolled back to an older state",
                )
            )
