"""Restoring archived events for an investigation: into a separate event store.

The events go back with the very columns they were stored with (stream id, version, action,
state byte for byte), in log order, after the archive has been checked on its own (every leaf
recomputed, the root compared with the signed checkpoint). The target is another store (a
SQLite file, another PostgreSQL schema), never the live store the events were pruned from:
there, the integrity follower would log them a second time as new events. Its read models are
then built from it like any store's (``auditcore project``).

Failure semantics: nothing is inserted unless the whole archive verifies; events are inserted
in batches, each one transaction; an event already in the target (a restore run again, or
interrupted) is skipped, so a rerun completes the restore without duplicating anything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import orjson

from auditcore.errors import ConfigurationError
from auditcore.facade import AuditCore
from auditcore.integrity.note import VerifierKey
from auditcore.lifecycle.archive import ArchivedEvent, check_archive, read_archive
from auditcore.lifecycle.retention import Retention
from auditcore.store.mapper import AuditStoredEvent

BATCH = 1_000


@dataclass(frozen=True)
class RestoreReport:
    workspace_id: str
    from_size: int
    to_size: int
    restored: int
    already_there: int


def restore_archive(
    path: Path,
    target: AuditCore,
    keys: Sequence[VerifierKey],
    progress: Callable[[int], None] | None = None,
) -> RestoreReport:
    """Check the archive, then insert its events into ``target`` (see the module header)."""
    checked = check_archive(path, keys)
    header = checked.header
    retention = Retention(target)
    try:
        if any(
            row.workspace_id == header.workspace_id and row.from_size == header.from_size
            for row in retention.archives(header.workspace_id)
        ):
            raise ConfigurationError(
                f"this store is the one {path.name} was pruned from: restore into a separate "
                "store (--into), e.g. sqlite:///investigation.sqlite, and project it there"
            )
    finally:
        retention.close()
    _, events = read_archive(path)
    restored = already = 0
    batch: list[ArchivedEvent] = []
    for event in events:
        batch.append(event)
        if len(batch) == BATCH:
            added = _insert(target, header.workspace_id, batch)
            restored, already = restored + added, already + len(batch) - added
            if progress:
                progress(len(batch))
            batch = []
    if batch:
        added = _insert(target, header.workspace_id, batch)
        restored, already = restored + added, already + len(batch) - added
        if progress:
            progress(len(batch))
    return RestoreReport(header.workspace_id, header.from_size, header.to_size, restored, already)


def _insert(target: AuditCore, workspace_id: str, events: Sequence[ArchivedEvent]) -> int:
    keys = [(workspace_id, UUID(str(orjson.loads(e.state).get("event_id")))) for e in events]
    there = target.app.event_ids.locate_events(keys)
    missing = [
        AuditStoredEvent(
            originator_id=UUID(event.stream_id),
            originator_version=event.version,
            topic=event.action,
            state=event.state,
            event_id=key[1],
            workspace_id=workspace_id,
        )
        for event, key in zip(events, keys, strict=True)
        if key not in there
    ]
    if missing:
        target.app.recorder.insert_events(missing)
    return len(missing)
