"""Retention: each workspace keeps its events for its policy's days; older ones are archived,
then pruned from the event store and the read models.

What is pruned is always a prefix of a workspace's Merkle log: the leaves ``[from, to)`` where
``from`` is where the previous prune ended and ``to`` the first leaf whose event was recorded
within the policy (or the latest signed checkpoint's size: only signed leaves are pruned, so
every archive carries a signature over what it holds). An event is therefore pruned once it,
and every event logged before it in its workspace, was recorded more than ``days`` ago.

Failure semantics (each step is durable before the next starts, and a rerun resumes):
1. the archive is written under a temporary name, ``fsync``ed and renamed into place;
2. its row (``archived``) is committed in the control database;
3. the events are deleted from the store in batches of ``batch_size``, each batch one short
   transaction (a crash leaves some deleted: the next run deletes the rest of the range);
4. the prune is recorded as an ``auditcore.retention.pruned`` event in the workspace, with an
   event id derived from the range (recorded again after a crash, it is stored once), and the
   row moves to ``pruned``;
5. at the end of the run, the read models' rows of every pruned range are deleted (one delete
   per table, once each read model has reached the ranges) and the rows move to ``done``.
So a kill at any instant loses nothing that is not in an archive whose row is committed.

The store's very first event is never deleted (it is archived like the others): its id is the
store's identity, by which read models refuse a ClickHouse database built from another store.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID, uuid5

import orjson
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from auditcore.errors import ConfigurationError, InvalidQueryError
from auditcore.events.actions import ActionRegistry
from auditcore.events.envelope import WORKSPACE_PATTERN, Actor
from auditcore.integrity.leaf import UNREADABLE
from auditcore.lifecycle.archive import (
    ArchivedEvent,
    ArchiveError,
    check_archive,
    leaf_hash_of,
    write_archive,
)
from auditcore.lifecycle.formats import FORMATS, ArchiveFormat, format_named
from auditcore.lifecycle.header import ArchiveHeader
from auditcore.lifecycle.locations import (
    ArchiveLocation,
    ArchiveUnreachableError,
    fetched,
    location_of,
)
from auditcore.lifecycle.prune import delete_events, delete_rows
from auditcore.lifecycle.runlock import runner_lock
from auditcore.lifecycle.tables import DEFAULT_POLICY, ArchiveRow, Base, RetentionPolicyRow
from auditcore.projection.log import LogReader
from auditcore.store.control import control_engine, create_tables

if TYPE_CHECKING:
    from auditcore.facade import AuditCore
    from auditcore.integrity.note import VerifierKey
    from auditcore.integrity.verify import VerifyReport

MAX_DAYS = 36_500
PAGE = 5_000
_NAMESPACE = UUID("6f1c2a8e-7d1b-4c55-9a53-2f0e4a1b9c77")
ARCHIVE_DIR_VARIABLE = "AUDITCORE_ARCHIVE_DIR"
ARCHIVE_FORMAT_VARIABLE = "AUDITCORE_ARCHIVE_FORMAT"


class RetentionPruned(BaseModel):
    from_size: int
    to_size: int
    events: int
    archive: str
    sha256: str
    checkpoint_size: int


class RetentionPolicySet(BaseModel):
    days: int | None
    """None: keep forever (or the default applies again, with ``inherited``)."""
    inherited: bool = False


def register_lifecycle_actions(registry: ActionRegistry) -> None:
    registry.register("auditcore.retention.pruned", RetentionPruned)
    registry.register("auditcore.retention.policy_set", RetentionPolicySet)


@dataclass(frozen=True)
class Policy:
    workspace_id: str
    days: int | None
    """None: kept forever."""
    inherited: bool
    """The installation's default applies (the workspace has no policy of its own)."""


@dataclass
class WorkspaceRun:
    workspace_id: str
    archived: int = 0
    pruned: int = 0
    archives: list[str] = field(default_factory=list)
    waiting_models: list[str] = field(default_factory=list)
    note: str = ""


@dataclass
class RunReport:
    workspaces: list[WorkspaceRun] = field(default_factory=list)
    busy: bool = False
    """Another process was running retention on this store: this run did nothing."""

    @property
    def pruned(self) -> int:
        return sum(w.pruned for w in self.workspaces)


def archive_name(
    workspace_id: str, from_size: int, to_size: int, encoding: ArchiveFormat = FORMATS["jsonl"]
) -> str:
    """A flat file name (workspace ids hold no ``/``; the fixed-width range, then the format's
    suffix, ends it)."""
    return f"{workspace_id}__{from_size:012d}-{to_size:012d}{encoding.suffix}"


def _check_workspace(workspace_id: str) -> None:
    if not re.fullmatch(WORKSPACE_PATTERN, workspace_id):
        raise InvalidQueryError("workspace_id", f"{workspace_id!r} is not a workspace id")


class Retention:
    """Policies, archives and pruning for one installation (``AuditCore``)."""

    def __init__(
        self,
        audit: AuditCore,
        archive_dir: Path | str | None = None,
        archive_format: str = "jsonl",
    ) -> None:
        """``archive_dir``: a directory, or ``s3://bucket/prefix``; ``archive_format``:
        ``jsonl`` (gzip JSON Lines) or ``parquet``."""
        self.audit = audit
        self.location: ArchiveLocation | None = (
            None if archive_dir is None else location_of(archive_dir)
        )
        self.encoding = format_named(archive_format)
        self.stopping = threading.Event()
        """Set: a run stops between deletion batches (the next run resumes)."""
        self.engine = control_engine(audit.settings)
        create_tables(self.engine, Base.metadata)
        register_lifecycle_actions(audit.registry)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def location_description(self) -> str:
        return "nowhere" if self.location is None else self.location.describe()

    # Policies.

    def set_policy(
        self, workspace_id: str | None, days: int | None, *, actor: Actor, source: str
    ) -> Policy:
        """Set a workspace's policy (``workspace_id=None``: the default); ``days=None`` keeps
        forever. Recorded as an audit event in the workspace."""
        if days is not None and not 1 <= days <= MAX_DAYS:
            raise InvalidQueryError("days", f"give 1 to {MAX_DAYS} days (or keep forever)")
        if workspace_id is not None:
            _check_workspace(workspace_id)
        key = DEFAULT_POLICY if workspace_id is None else workspace_id
        with Session(self.engine) as session, session.begin():
            row = session.get(RetentionPolicyRow, key)
            if row is None:
                session.add(RetentionPolicyRow(workspace_id=key, days=days or 0, updated_at=_now()))
            else:
                row.days, row.updated_at = days or 0, _now()
        if workspace_id is not None:
            self.audit.record_control_event(
                "auditcore.retention.policy_set",
                workspace_id=workspace_id,
                metadata=RetentionPolicySet(days=days),
                actor=actor,
                source=source,
            )
        return self.policy(workspace_id or DEFAULT_POLICY)

    def inherit_default(self, workspace_id: str, *, actor: Actor, source: str) -> Policy:
        """Drop the workspace's own policy: the default applies again."""
        _check_workspace(workspace_id)
        with Session(self.engine) as session, session.begin():
            row = session.get(RetentionPolicyRow, workspace_id)
            if row is not None:
                session.delete(row)
        policy = self.policy(workspace_id)
        self.audit.record_control_event(
            "auditcore.retention.policy_set",
            workspace_id=workspace_id,
            metadata=RetentionPolicySet(days=policy.days, inherited=True),
            actor=actor,
            source=source,
        )
        return policy

    def policy(self, workspace_id: str) -> Policy:
        with Session(self.engine) as session:
            own = session.get(RetentionPolicyRow, workspace_id)
            if own is not None:
                return Policy(workspace_id, own.days or None, inherited=False)
            default = session.get(RetentionPolicyRow, DEFAULT_POLICY)
        return Policy(workspace_id, default.days or None if default else None, inherited=True)

    def policies(self) -> list[Policy]:
        """The default, then every workspace with a policy of its own."""
        with Session(self.engine) as session:
            rows = session.scalars(
                select(RetentionPolicyRow).order_by(RetentionPolicyRow.workspace_id)
            ).all()
        own = [Policy(r.workspace_id, r.days or None, inherited=False) for r in rows]
        default = next((p for p in own if p.workspace_id == DEFAULT_POLICY), None)
        others = [p for p in own if p.workspace_id != DEFAULT_POLICY]
        return [default or Policy(DEFAULT_POLICY, None, inherited=False), *others]

    # Archives.

    def archives(self, workspace_id: str | None = None) -> list[ArchiveRow]:
        with Session(self.engine, expire_on_commit=False) as session:
            query = select(ArchiveRow).order_by(ArchiveRow.workspace_id, ArchiveRow.from_size)
            if workspace_id is not None:
                query = query.where(ArchiveRow.workspace_id == workspace_id)
            return list(session.scalars(query).all())

    def pruned_ranges(self) -> dict[str, list[tuple[int, int]]]:
        """Each workspace's archived ranges of its log (whose events may be gone)."""
        ranges: dict[str, list[tuple[int, int]]] = {}
        for row in self.archives():
            ranges.setdefault(row.workspace_id, []).append((row.from_size, row.to_size))
        return ranges

    def check_archives(self, report: VerifyReport, keys: Sequence[VerifierKey]) -> None:
        """For ``verify``: each recorded archive must verify on its own, and its leaves must
        be the retained leaf hashes of its range (else the record hides a deletion)."""
        from auditcore.integrity.verify import Problem  # noqa: PLC0415

        for row in self.archives(None):
            if report.workspaces and row.workspace_id not in report.workspaces:
                continue
            where = f"the archive of positions {row.from_size} to {row.to_size - 1}"
            try:
                with fetched(row.location) as path:
                    self._check_one(row, path, keys)
            except ArchiveUnreachableError as error:
                report.warnings.append(
                    f"{row.workspace_id}: {where} is not reachable ({error}); its range is "
                    "accepted on the strength of its record"
                )
            except ArchiveError as error:
                report.add(
                    Problem("archive", row.workspace_id, row.from_size, None, f"{where}: {error}")
                )

    def _check_one(self, row: ArchiveRow, path: Path, keys: Sequence[VerifierKey]) -> None:
        retained = iter(
            self.audit.integrity.log.leaves_of(row.workspace_id, row.from_size, row.to_size)
        )
        mismatch: list[int] = []

        def compare(event: ArchivedEvent) -> None:
            leaf = next(retained, None)
            if leaf is None or leaf.hash != leaf_hash_of(event):
                mismatch.append(event.index)

        header = check_archive(path, keys, compare).header
        if (header.workspace_id, header.from_size, header.to_size) != (
            row.workspace_id,
            row.from_size,
            row.to_size,
        ):
            raise ArchiveError("it does not hold the range its record names")
        if mismatch:
            raise ArchiveError(
                f"its event at position {mismatch[0]} differs from the retained leaf"
            )

    # Running.

    def run(
        self,
        *,
        now: datetime | None = None,
        workspace_id: str | None = None,
        batch_size: int = 1_000,
        max_events: int | None = None,
        pause: float = 0.0,
        progress: Callable[[int], None] | None = None,
        wait: float = 30.0,
    ) -> RunReport:
        """Archive and prune every workspace's events older than its policy (as of ``now``).
        ``pause``: seconds to sleep between deletion batches (gives writers room). One runner
        at a time per store (``runlock``): if another holds the lock for ``wait`` seconds
        more, the report says ``busy`` and nothing was done."""
        if self.location is None:
            raise ConfigurationError(
                f"no archive directory: give --archive-dir or set {ARCHIVE_DIR_VARIABLE} "
                "(a directory or s3://bucket/prefix: events are archived there before they "
                "are pruned)"
            )
        with runner_lock(self.engine, wait) as had:
            if not had:
                return RunReport(busy=True)
            return self._run(now, workspace_id, batch_size, max_events, pause, progress)

    def _run(
        self,
        now: datetime | None,
        workspace_id: str | None,
        batch_size: int,
        max_events: int | None,
        pause: float,
        progress: Callable[[int], None] | None,
    ) -> RunReport:
        moment = now or datetime.now(UTC)
        log = self.audit.integrity.log
        report = RunReport()
        workspaces = [w for w in log.heads() if w != UNREADABLE]
        if workspace_id is not None:
            workspaces = [w for w in workspaces if w == workspace_id]
        unfinished = {row.workspace_id for row in self.archives() if row.state != "done"}
        for workspace in workspaces:
            if self.stopping.is_set():
                break
            run = WorkspaceRun(workspace)
            report.workspaces.append(run)
            if workspace in unfinished:
                self._finish(workspace, run, batch_size, pause, progress)
            policy = self.policy(workspace)
            if policy.days is None:
                run.note = run.note or "kept forever"
                continue
            self._prune(
                workspace, moment - timedelta(days=policy.days), run,
                batch_size, max_events, pause, progress,
            )  # fmt: skip
        self._clean_read_models(report)
        return report

    def _prune(
        self,
        workspace: str,
        cutoff: datetime,
        run: WorkspaceRun,
        batch_size: int,
        max_events: int | None,
        pause: float,
        progress: Callable[[int], None] | None,
    ) -> None:
        log = self.audit.integrity.log
        done = self.archives(workspace)
        start = max((row.to_size for row in done), default=0)
        checkpoint = log.latest_checkpoint(workspace)
        if checkpoint is None:
            run.note = "no signed checkpoint yet: nothing can be archived with a signature"
            return
        limit = checkpoint.size
        if max_events is not None:
            limit = min(limit, start + max_events)
        end = self._first_kept(workspace, start, limit, cutoff)
        if end <= start:
            return
        assert self.location is not None
        header, placed = self.location.store(
            archive_name(workspace, start, end, self.encoding),
            lambda path: write_archive(log, workspace, start, end, checkpoint, path, self.encoding),
            lambda path: self._check_written(path, workspace, start, end),
        )
        row = ArchiveRow(
            workspace_id=workspace,
            from_size=start,
            to_size=end,
            first_position=header.first_position,
            last_position=header.last_position,
            checkpoint_size=checkpoint.size,
            location=placed.location,
            sha256=placed.sha256,
            state="archived",
            created_at=_now(),
        )
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.add(row)
        run.archived += end - start
        run.archives.append(placed.location)
        self._finish(workspace, run, batch_size, pause, progress)

    def _check_written(self, path: Path, workspace: str, start: int, end: int) -> ArchiveHeader:
        """Read the written archive back and check it whole (every leaf, the signed root)
        before anything is deleted on its strength."""
        header = check_archive(path, self.audit.integrity.trusted_keys()).header
        if (header.workspace_id, header.from_size, header.to_size) != (workspace, start, end):
            raise ArchiveError(f"the archive written at {path} does not hold its range")
        return header

    def _first_kept(self, workspace: str, start: int, limit: int, cutoff: datetime) -> int:
        """The first log position from ``start`` whose event was recorded at or after
        ``cutoff`` (or ``limit``)."""
        log = self.audit.integrity.log
        stamp = cutoff.astimezone(UTC)
        for page in range(start, limit, PAGE):
            leaves = log.leaves_of(workspace, page, min(page + PAGE, limit))
            events = {e.position: e for e in log.events_at([leaf.position for leaf in leaves])}
            for leaf in leaves:
                event = events.get(leaf.position)
                if event is None or _recorded_at(event.state) >= stamp:
                    return leaf.leaf_index
        return limit

    def _finish(
        self,
        workspace: str,
        run: WorkspaceRun,
        batch_size: int,
        pause: float,
        progress: Callable[[int], None] | None,
    ) -> None:
        """Take the workspace's archived ranges through deletion from the store (the read
        models follow at the end of the run: ``_clean_read_models``)."""
        log = self.audit.integrity.log
        anchor = self._anchor()
        for row in self.archives(workspace):
            if row.state == "archived":
                for first in range(row.from_size, row.to_size, batch_size):
                    leaves = log.leaves_of(workspace, first, min(first + batch_size, row.to_size))
                    run.pruned += delete_events(
                        self.audit.app,
                        workspace,
                        [
                            (leaf.position, leaf.event_id)
                            for leaf in leaves
                            if leaf.position != anchor
                        ],
                    )
                    if progress:
                        progress(len(leaves))
                    if self.stopping.is_set():
                        return  # the row stays "archived": the next run deletes the rest
                    if pause:
                        time.sleep(pause)
                name = row.location.rsplit("/", 1)[-1]
                self.audit.record_control_event(
                    "auditcore.retention.pruned",
                    workspace_id=workspace,
                    metadata=RetentionPruned(
                        from_size=row.from_size,
                        to_size=row.to_size,
                        events=row.to_size - row.from_size,
                        archive=name,
                        sha256=row.sha256,
                        checkpoint_size=row.checkpoint_size,
                    ),
                    actor=Actor(id="auditcore_retention", type="system", name="retention"),
                    source="system",
                    event_id=uuid5(_NAMESPACE, f"{workspace}\x00{row.from_size}\x00{row.to_size}"),
                )
                self._set_state(row, "pruned")

    def _clean_read_models(self, report: RunReport) -> None:
        """Delete the read models' rows of every range pruned so far (one delete per table)."""
        rows = [row for row in self.archives() if row.state == "pruned"]
        if not rows:
            return
        lasts: dict[str, int] = {}
        for row in rows:
            lasts[row.workspace_id] = max(lasts.get(row.workspace_id, 0), row.last_position)
        audit = self.audit
        waiting = delete_rows(
            audit.clickhouse,
            audit.settings.clickhouse_target,
            audit.read_models,
            lasts,
            keep=self._anchor(),
        )
        for run in report.workspaces:
            if run.workspace_id in lasts:
                run.waiting_models = waiting
        if not waiting:
            for row in rows:
                self._set_state(row, "done")

    def _anchor(self) -> int:
        """The store position of the store's first event (kept: see the module header)."""
        first = LogReader(self.audit.app).after(0, 1)
        return first[0].position if first else 0

    def _set_state(self, row: ArchiveRow, state: str) -> None:
        with Session(self.engine) as session, session.begin():
            stored = session.get(ArchiveRow, (row.workspace_id, row.from_size))
            if stored is not None:
                stored.state = state
        row.state = state


def _recorded_at(state: bytes) -> datetime:
    try:
        value = orjson.loads(state).get("recorded_at")
        moment = datetime.fromisoformat(value)
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return datetime.max.replace(tzinfo=UTC)  # unreadable: never pruned by age
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)
