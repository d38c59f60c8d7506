"""Archives of pruned events: one file per pruned range, gzip-compressed JSON Lines or Parquet
(``formats``), kept in a local directory or an S3-compatible bucket (``locations``).

An archive holds one workspace's log positions ``[from_size, to_size)``: a header, then one
record per event with its stored columns and its state verbatim (so its leaf can be
recomputed). In JSON Lines the header is the first line, every other line an event exactly as
an offline proof export writes it:

    {"format": "auditcore-archive/1", "workspace_id": …, "from_size": …, "to_size": …,
     "checkpoint": "<signed note of size M ≥ to_size>", "nodes": [[level, index, b64], …], …}

``nodes`` are the stored subtree hashes outside the range that the RFC 9162 root of the
checkpoint's ``M`` leaves needs (left of ``from_size`` and right of ``to_size``). With them and
the recomputed leaves, the root must equal the signed one, which holds only if the lines are
exactly the log's leaves ``[from_size, to_size)``: nothing added, removed, changed or
reordered. ``check_archive`` does that (and checks the signature with the keys it is given).

Failure semantics: an archive is written to a temporary name, flushed and ``fsync``ed, then
renamed (and its directory ``fsync``ed), so a crash leaves a whole archive or none under its
name; pruning deletes nothing before the archive is in place and checked. Every event is
compared with its stored leaf while it is written: an event that no longer matches stops the
archive with an error (``auditcore verify`` then says what changed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from auditcore.integrity.leaf import event_leaf_hash
from auditcore.integrity.log import IntegrityLog, StoredCheckpoint
from auditcore.integrity.merkle import Node, node_hash
from auditcore.integrity.note import Checkpoint, Note, NoteError, VerifierKey
from auditcore.lifecycle.formats import FORMATS, ArchiveFormat, Page, format_of
from auditcore.lifecycle.header import ArchivedEvent, ArchiveError, ArchiveHeader

__all__ = ["ArchiveError", "ArchiveHeader", "ArchivedEvent", "check_archive", "read_archive"]

PAGE = 5_000


def needed_nodes(size: int, start: int, end: int) -> list[Node]:
    """The perfect subtrees outside ``[start, end)`` that the root of ``size`` leaves needs
    when the leaves in ``[start, end)`` are given (RFC 9162's MTH recursion)."""
    nodes: list[Node] = []

    def visit(low: int, count: int) -> None:
        high = low + count
        if start <= low and high <= end:
            return  # leaves we hold
        perfect = count & (count - 1) == 0 and low % count == 0
        if perfect and (high <= start or low >= end):
            nodes.append((count.bit_length() - 1, low // count))
            return
        split = 1 << ((count - 1).bit_length() - 1)
        visit(low, split)
        visit(low + split, count - split)

    if size:
        visit(0, size)
    return nodes


def root_with(size: int, start: int, leaves: Sequence[bytes], known: dict[Node, bytes]) -> bytes:
    """MTH of ``size`` leaves, from the leaf hashes of ``[start, start + len(leaves))`` and the
    ``known`` subtrees elsewhere (``needed_nodes``)."""
    end = start + len(leaves)

    def mth(low: int, count: int) -> bytes:
        if count == 1 and start <= low < end:
            return leaves[low - start]
        perfect = count & (count - 1) == 0 and low % count == 0
        if perfect and (low + count <= start or low >= end):
            found = known.get((count.bit_length() - 1, low // count))
            if found is None:
                raise ArchiveError(f"the archive lacks the subtree at {low}+{count}")
            return found
        split = 1 << ((count - 1).bit_length() - 1)
        return node_hash(mth(low, split), mth(low + split, count - split))

    return mth(0, size)


def write_archive(
    log: IntegrityLog,
    workspace_id: str,
    from_size: int,
    to_size: int,
    checkpoint: StoredCheckpoint,
    path: Path,
    encoding: ArchiveFormat = FORMATS["jsonl"],
) -> ArchiveHeader:
    """Write leaves ``[from_size, to_size)`` of the workspace's log, with their events from the
    store, to ``path`` in ``encoding`` (atomically; see the module header)."""
    wanted = needed_nodes(checkpoint.size, from_size, to_size)
    found = log.node_hashes(workspace_id, wanted)
    if len(found) != len(wanted):
        raise ArchiveError(f"the log of workspace {workspace_id} lacks nodes; run verify")
    first = log.leaves_of(workspace_id, from_size, from_size + 1)
    last = log.leaves_of(workspace_id, to_size - 1, to_size)
    if not first or not last:
        raise ArchiveError(f"the log of workspace {workspace_id} lacks leaves; run verify")
    header = ArchiveHeader(
        workspace_id,
        from_size,
        to_size,
        checkpoint.note,
        tuple((level, index, found[(level, index)]) for level, index in wanted),
        first[0].position,
        last[0].position,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with temporary.open("wb") as raw:
            encoding.write(header, _pages(log, workspace_id, from_size, to_size), raw)
            raw.flush()
            os.fsync(raw.fileno())
        temporary.replace(path)
        _fsync_directory(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
    return header


def _pages(log: IntegrityLog, workspace_id: str, from_size: int, to_size: int) -> Iterator[Page]:
    for start in range(from_size, to_size, PAGE):
        stop = min(start + PAGE, to_size)
        leaves = log.leaves_of(workspace_id, start, stop)
        events = {e.position: e for e in log.events_at([leaf.position for leaf in leaves])}
        if [leaf.leaf_index for leaf in leaves] != list(range(start, stop)):
            raise ArchiveError(f"the log of workspace {workspace_id} lacks leaves; run verify")
        page: Page = []
        for leaf in leaves:
            event = events.get(leaf.position)
            if event is None or leaf.hash != event_leaf_hash(
                leaf.leaf_index, event.stream_id, event.version, event.action, event.state
            ):
                raise ArchiveError(
                    f"the event at position {leaf.leaf_index} of workspace {workspace_id} is "
                    "missing or no longer matches its logged leaf: nothing was archived or "
                    "pruned; run `auditcore verify`"
                )
            page.append((leaf.leaf_index, event))
        yield page


def read_archive(path: Path) -> tuple[ArchiveHeader, Iterator[ArchivedEvent]]:
    """The header, and the events one by one, of an archive in either format."""
    return format_of(path).read(path)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class ArchiveCheck:
    header: ArchiveHeader
    checkpoint: Checkpoint
    events: int
    signature_checked: bool


def check_archive(
    path: Path,
    keys: Sequence[VerifierKey],
    on_event: Callable[[ArchivedEvent], None] | None = None,
) -> ArchiveCheck:
    """Check an archive on its own: every line's leaf recomputed, the root rebuilt and compared
    with the signed checkpoint's, the signature checked with ``keys`` (if any). Raises
    ``ArchiveError`` naming the first problem."""
    header, events = read_archive(path)
    try:
        note = Note.parse(header.checkpoint)
        if keys:
            workspace = header.workspace_id
            note.verified_by([*keys, *(key.for_log(workspace) for key in keys)])
        checkpoint = Checkpoint.parse(note.text)
    except NoteError as error:
        raise ArchiveError(f"the archive's checkpoint is not trusted: {error}") from error
    if not checkpoint.origin.endswith(f"/{header.workspace_id}"):
        raise ArchiveError(f"its checkpoint is of log {checkpoint.origin!r}, not this workspace's")
    if not 0 <= header.from_size < header.to_size <= checkpoint.size:
        raise ArchiveError(
            f"its range [{header.from_size}, {header.to_size}) does not lie within the "
            f"checkpoint's {checkpoint.size} leaves"
        )
    leaves: list[bytes] = []
    for expected, event in enumerate(events, start=header.from_size):
        if event.index != expected:
            raise ArchiveError(f"line for log position {event.index} where {expected} belongs")
        leaves.append(leaf_hash_of(event))
        if on_event is not None:
            on_event(event)
    if len(leaves) != header.to_size - header.from_size:
        raise ArchiveError(
            f"it holds {len(leaves)} events; its header says {header.to_size - header.from_size}"
        )
    known = {(level, index): value for level, index, value in header.nodes}
    if root_with(checkpoint.size, header.from_size, leaves, known) != checkpoint.root:
        raise ArchiveError(
            "its events do not hash to the signed checkpoint's root: the archive was edited "
            "(an event changed, added, removed or reordered)"
        )
    return ArchiveCheck(header, checkpoint, len(leaves), bool(keys))


def leaf_hash_of(event: ArchivedEvent) -> bytes:
    try:
        return event_leaf_hash(
            event.index, event.stream_id, event.version, event.action, event.state
        )
    except (ValueError, TypeError) as error:
        raise ArchiveError(
            f"the line for log position {event.index} is damaged: {error}"
        ) from error
