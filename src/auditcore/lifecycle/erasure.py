"""Erasing a subject: destroy its data keys, record it, re-project what the read models hold.

Steps, each safe to run again (``auditcore erase`` run twice finishes what a crash left):

1. One transaction in the control database: every data key of the subject in the workspace
   is set to NULL, and an erasure row (``requested_at``, ``finished_at`` NULL) is added unless
   one is unfinished. From its commit on, no read of the store can open the subject's fields.
2. The erasure is recorded as ``auditcore.subject.erased`` with an event id derived from the
   workspace, subject and ``requested_at``, so a redo records nothing new.
3. The streams holding the subject's sealed fields are re-projected (every read model but the
   roll-ups, which hold no personal field), so ClickHouse holds the erased marker too.
4. The row is marked finished.

Failure semantics: a crash after step 1 leaves the keys destroyed and the row unfinished;
the next ``erase`` of that subject redoes steps 2-4. A read model another process follows
cannot be re-projected here: the erasure is returned unfinished with the reason, and
re-running it where that follower runs finishes it. Database errors reach the caller.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from uuid import UUID, uuid5

import orjson
from sqlalchemy import insert, select, update

from auditcore.errors import (
    EventIdReusedError,
    FollowedElsewhereError,
    InvalidEventError,
    one_line,
)
from auditcore.events.envelope import Actor, RequestContext, Target
from auditcore.lifecycle.keys import ERASURES, SubjectKeys
from auditcore.projection.log import LogReader
from auditcore.readmodel.model import EventTable

if TYPE_CHECKING:
    from auditcore.facade import AuditCore

ERASED_ACTION = "auditcore.subject.erased"
_IDS = UUID("6d1e2a8c-52f3-4c55-9b7e-2a1d4c0e7a31")
LOCK_PATIENCE = 10.0
"""Seconds to wait for a read model's follower lock held by another process."""
WHOLE_WORKSPACE_AFTER = 100
"""Past this many streams, the workspace is re-projected whole (one delete, not hundreds)."""


@dataclass(frozen=True)
class ErasureResult:
    workspace_id: str
    subject_id: str
    requested_at: datetime
    keys_destroyed: int
    event_id: UUID
    streams: int
    finished: bool
    unfinished_because: str | None = None


def erase(
    audit: AuditCore,
    keys: SubjectKeys,
    workspace_id: str,
    subject_id: str,
    *,
    actor: Actor | None = None,
    source: str = "cli",
    context: RequestContext | None = None,
) -> ErasureResult:
    if not isinstance(subject_id, str) or not 1 <= len(subject_id) <= 256:
        raise InvalidEventError(ERASED_ACTION, [("subject_id", "give 1-256 characters")])
    audit.registry.spec(ERASED_ACTION)  # refuse before anything is destroyed if unknown
    with keys.engine().begin() as connection:
        destroyed = keys.destroy(connection, workspace_id, subject_id)
        requested_at = connection.execute(
            select(ERASURES.c.requested_at).where(
                ERASURES.c.workspace_id == workspace_id,
                ERASURES.c.subject_id == subject_id,
                ERASURES.c.finished_at.is_(None),
            )
        ).scalar()
        now = datetime.now(UTC)
        if requested_at is None:
            requested_at = now
            connection.execute(
                insert(ERASURES).values(
                    workspace_id=workspace_id,
                    subject_id=subject_id,
                    requested_at=requested_at,
                    attempted_at=now,
                )
            )
        else:  # a redo: its stamp tells other processes to drop their caches again
            connection.execute(
                update(ERASURES)
                .where(
                    ERASURES.c.workspace_id == workspace_id,
                    ERASURES.c.subject_id == subject_id,
                    ERASURES.c.requested_at == requested_at,
                )
                .values(attempted_at=now)
            )
    keys.forget_cached()
    keys.scrub()
    event_id = uuid5(
        _IDS, orjson.dumps([workspace_id, subject_id, requested_at.isoformat()]).decode()
    )
    # A redo by another actor than the run that crashed: already on record, as it was.
    with suppress(EventIdReusedError):
        audit.record_control_event(
            ERASED_ACTION,
            workspace_id=workspace_id,
            metadata={"subject_id": subject_id, "requested_at": requested_at.isoformat()},
            actor=actor or Actor(id="system", type="system", name="System"),
            source=source,
            context=context or RequestContext(),
            targets=[Target(type="subject", id=subject_id)],
            event_id=event_id,
            occurred_at=requested_at,
        )
    # Other processes notice the erasure within ``cache_seconds``: re-project after that.
    time.sleep(keys.cache_seconds)
    streams = sorted(set(subject_streams(audit, workspace_id, subject_id)))
    reason = reproject(audit, workspace_id, streams)
    if reason is None:
        with keys.engine().begin() as connection:
            connection.execute(
                update(ERASURES)
                .where(
                    ERASURES.c.workspace_id == workspace_id,
                    ERASURES.c.subject_id == subject_id,
                    ERASURES.c.requested_at == requested_at,
                )
                .values(finished_at=datetime.now(UTC))
            )
    return ErasureResult(
        workspace_id,
        subject_id,
        requested_at,
        destroyed,
        event_id,
        len(streams),
        finished=reason is None,
        unfinished_because=reason,
    )


def subject_streams(audit: AuditCore, workspace_id: str, subject_id: str) -> Iterator[UUID]:
    """The workspace's streams holding fields sealed for the subject (one pass over the log)."""
    needle = orjson.dumps({"s": subject_id})[1:-1]
    log = LogReader(audit.app)
    position = 0
    while batch := log.after(position, 20_000):
        for event in batch:
            # A cheap byte search first; the decode confirms it is a sealed entry's subject.
            if needle in event.state:
                state = orjson.loads(event.state)
                if state["workspace_id"] == workspace_id and any(
                    entry["s"] == subject_id for entry in state.get("sealed", ())
                ):
                    yield UUID(event.stream_id)
        position = batch[-1].position


def reproject(audit: AuditCore, workspace_id: str, streams: list[UUID]) -> str | None:
    """Re-project the streams in every read model holding personal fields; None when done,
    else why not. A read model another process follows is tried again for a few seconds: a
    holder that just died (an erasure killed while re-projecting) lets go of its lock as soon
    as its database session ends."""
    if not streams:
        return None
    try:
        for model in audit.read_models:
            if isinstance(model, EventTable) and model.group_by:
                continue  # a roll-up holds counts, no personal field
            _reproject_model(audit, model.name, workspace_id, streams)
    except Exception as error:
        return one_line(error)
    return None


def _reproject_model(audit: AuditCore, name: str, workspace_id: str, streams: list[UUID]) -> None:
    deadline = time.monotonic() + LOCK_PATIENCE
    while True:
        try:
            if len(streams) > WHOLE_WORKSPACE_AFTER:
                audit.rebuild_part(name, workspace_id=workspace_id)
            else:
                for stream in streams:
                    audit.rebuild_part(name, stream_id=stream)
        except FollowedElsewhereError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        else:
            return
