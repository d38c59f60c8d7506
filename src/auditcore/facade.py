"""``AuditCore``: the one object domain code holds to record and read audit events."""

from __future__ import annotations

import atexit
import itertools
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar, Unpack, cast
from uuid import UUID

from clickhouse_connect.driver.client import Client
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from eventsourcing.utils import retry
from pydantic import BaseModel

from auditcore.clickhouse.clients import ThreadClients
from auditcore.domain.aggregate import AuditedAggregate
from auditcore.errors import (
    ConfigurationError,
    ConflictError,
    EventIdReusedError,
    InvalidEventError,
    NotFoundError,
    StreamNotFoundError,
)
from auditcore.events.actions import ActionRegistry, LazyCatalog, default_registry
from auditcore.events.builtin import register_builtin_actions
from auditcore.events.envelope import AuditEvent, to_utc
from auditcore.events.factory import build_standalone_event
from auditcore.events.ids import stream_id_for
from auditcore.events.provenance import Provenance
from auditcore.lifecycle.master import configured as master_key_configured
from auditcore.projection.rebuild import RebuildResult, rebuild, rebuild_part
from auditcore.projection.runner import Progress, ProjectionRunner
from auditcore.readmodel.queries import WorkspaceReader
from auditcore.readmodel.registry import ReadModelRegistry, load_read_models
from auditcore.store.application import AuditApplication
from auditcore.store.dispatcher import (
    TRANSIENT,
    Dispatcher,
    DispatcherDrainError,
    DispatcherStats,
    DispatchHandle,
    DispatchSettings,
    DrainReport,
)
from auditcore.store.mapper import AuditMapper, AuditStoredEvent
from auditcore.store.points import StorePoints
from auditcore.store.recorders import BulkAppender
from auditcore.store.settings import Settings
from auditcore.store.shutdown import drain_on_sigterm, stop_draining
from auditcore.store.standalone import StandaloneEncoder

if TYPE_CHECKING:
    from auditcore.integrity.service import Integrity
    from auditcore.integrity.settings import IntegritySettings
    from auditcore.lifecycle.erasure import ErasureResult
    from auditcore.lifecycle.keys import SubjectKeys
    from auditcore.lifecycle.master import MasterKeys
    from auditcore.store.action_schemas import ActionCatalog, Registered
    from auditcore.store.heartbeats import Heartbeats
    from auditcore.store.secrets import ServerSecrets

A = TypeVar("A", bound=AuditedAggregate)

# What makes two events "the same" for an idempotent retry: not when it was sent or by
# which request, but what it says happened (the stream is compared on its own: see
# ``_same_content``).
_IDEMPOTENCY_FIELDS = (
    "workspace_id",
    "action",
    "actor",
    "targets",
    "source",
    "metadata",
)


class AuditCore:
    """Owns the configuration, the event store application and its connections.

    Use it as a context manager (or call ``close()``) so connections are released::

        with AuditCore.from_env() as audit:
            incident = Incident.open("acme", title="API down", severity="sev1", service="api")
            audit.save(incident)
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: ActionRegistry | None = None,
        dispatch: DispatchSettings | None = None,
        integrity: IntegritySettings | None = None,
        master_keys: MasterKeys | None = None,
    ) -> None:
        self.settings = settings or Settings()
        self._integrity_settings = integrity
        base = registry or default_registry
        # auditcore records its own events (keys issued, exports, reports) in any registry.
        register_builtin_actions(base)
        self.catalog = LazyCatalog(lambda: self.action_schemas)
        """Actions registered as data (JSON Schema) in the control database."""
        self.registry = base if base.catalog is not None else base.with_catalog(self.catalog)
        self._dispatch_settings = dispatch or DispatchSettings()
        self._dispatcher: Dispatcher | None = None
        self._dispatcher_lock = threading.Lock()
        if self.settings.uses_postgres:  # what is wrong, in one line, before the pool retries
            from auditcore.store.probe import probe_postgres  # noqa: PLC0415 - PostgreSQL only

            probe_postgres(self.settings.eventsourcing_env())
        try:
            self.app = AuditApplication(self.settings, self.registry)
        except (OperationalError, OSError) as error:
            raise ConfigurationError(
                f"cannot open the event store ({self.settings.describe_event_store()}): {error}. "
                "Check AUDITCORE_EVENT_STORE and that the database is running."
            ) from error
        self.subject_keys: SubjectKeys | None = None
        """Personal data's keys, when a master key is set (``master_keys`` or the
        environment: ``auditcore.lifecycle.master``); otherwise nothing is encrypted."""
        if master_keys is not None or master_key_configured():
            self._seal_personal_data(master_keys)
        self._standalone = StandaloneEncoder(self.registry, self.app.mapper)
        self._heartbeats: Heartbeats | None = None
        self.clickhouse_clients = ThreadClients(self.settings.clickhouse_target)
        """The calling thread's ClickHouse client (opened in that thread on first use)."""
        self._migrated = False

    @cached_property
    def action_schemas(self) -> ActionCatalog:
        """The control database's action schemas (``register_action`` adds one)."""
        # Imported here: SQLAlchemy takes a fifth of a second to import.
        from auditcore.store.action_schemas import ActionCatalog  # noqa: PLC0415

        return ActionCatalog(self.settings)

    def register_action(
        self,
        name: str,
        schema: Any,
        *,
        workspace_id: str | None = None,
        version: int | None = None,
        description: str = "",
        registered_by: str = "python",
    ) -> Registered:
        """Register an action's metadata schema as JSON Schema (draft 2020-12), for one
        workspace or (``workspace_id=None``) every workspace, seen by every process of the
        installation. Same schema again: nothing new; a different one: the next version.
        Raises ``ValueError`` (``SchemaError`` for the schema) saying what is wrong."""
        python_actions = frozenset(spec.name for spec in self.registry)
        return self.action_schemas.register(
            name,
            schema,
            workspace_id=workspace_id,
            version=version,
            description=description,
            registered_by=registered_by,
            python_actions=python_actions,
        )

    def _seal_personal_data(self, master_keys: MasterKeys | None) -> None:
        # Imported here: only processes that encrypt need cryptography and SQLAlchemy.
        from auditcore.lifecycle.keys import SubjectKeys  # noqa: PLC0415
        from auditcore.lifecycle.master import MasterKeys  # noqa: PLC0415
        from auditcore.lifecycle.sealing import Sealer  # noqa: PLC0415

        keys = SubjectKeys(self.settings, master_keys or MasterKeys.from_env())
        try:
            keys.check_master()  # a wrong master key: one line now, not at the first read
        except BaseException:
            keys.close()
            self.app.close()
            raise
        self.subject_keys = keys
        cast("AuditMapper", self.app.mapper).sealer = Sealer(self.registry, keys)

    @classmethod
    def from_env(
        cls,
        *,
        registry: ActionRegistry | None = None,
        dispatch: DispatchSettings | None = None,
    ) -> AuditCore:
        return cls(Settings.from_env(), registry=registry, dispatch=dispatch)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Drain the dispatcher, then release every connection.

        Raises ``DispatcherDrainError`` (after releasing everything) if dispatched events could
        not be stored within the dispatcher's ``close_timeout``; each one's handle says so.
        """
        drained = DrainReport()
        if self._dispatcher is not None:
            drained = self._dispatcher.close()
            atexit.unregister(self._dispatcher.close)
            stop_draining(self._dispatcher.close)
        if self._heartbeats is not None:
            self._heartbeats.close()
        self.clickhouse_clients.close()
        if self.subject_keys is not None:
            self.subject_keys.close()
        if "integrity" in self.__dict__:
            self.integrity.close()
        if "projections" in self.__dict__:
            self.projections.close()
        if "secrets" in self.__dict__:
            self.secrets.close()
        if "action_schemas" in self.__dict__:
            self.action_schemas.close()
        self.app.close()
        if not drained:
            raise DispatcherDrainError(drained)

    # Writing.

    def save(self, *aggregates: AuditedAggregate) -> list[AuditEvent]:
        """Store the pending events of all given aggregates in one transaction.

        Returns the stored events. Raises ``ConflictError`` if another writer got there
        first (nothing is stored then), ``EventIdReusedError`` if a given event id was
        already used for a different event.
        """
        return self._store(
            [event for aggregate in aggregates for event in aggregate.collect_events()]
        )

    def record(
        self,
        action: str,
        *,
        workspace_id: str,
        metadata: BaseModel | Mapping[str, Any] | None = None,
        **provenance: Unpack[Provenance],
    ) -> AuditEvent:
        """Record one standalone event (no aggregate needed) and return it once committed.

        ``provenance``: ``actor``, ``targets``, ``source``, ``context``, ``event_id`` (an
        idempotency key: re-recording the same id and content returns the first event and
        stores nothing new) and ``occurred_at``.
        """
        return self._store(
            [build_standalone_event(self.registry, action, workspace_id, metadata, provenance)]
        )[0]

    def record_control_event(
        self,
        action: str,
        *,
        workspace_id: str,
        metadata: BaseModel | Mapping[str, Any] | None = None,
        **provenance: Unpack[Provenance],
    ) -> AuditEvent:
        """Record one of auditcore's own control-plane events (``auditcore.*``: workspaces,
        keys, exports, reports, throttled authentication); ``record`` refuses those to every
        caller, and this refuses every other action."""
        event = build_standalone_event(
            self.registry, action, workspace_id, metadata, provenance, control=True
        )
        return self._store([event])[0]

    def build_draft(self, draft: Mapping[str, Any]) -> AuditEvent:
        """Validate one standalone event given as ``record``'s keyword arguments in a mapping."""
        if not isinstance(draft, Mapping):
            raise InvalidEventError(
                "?", [("", f"expected a mapping of record()'s arguments, got {draft!r:.80}")]
            )
        fields = dict(draft)
        missing = [name for name in ("action", "workspace_id") if name not in fields]
        if missing:
            raise InvalidEventError(
                str(fields.get("action", "?")), [(name, "Field required") for name in missing]
            )
        action, workspace_id = fields.pop("action"), fields.pop("workspace_id")
        metadata = fields.pop("metadata", None)
        schema_version = fields.pop("schema_version", None)
        return build_standalone_event(
            self.registry,
            action,
            workspace_id,
            metadata,
            cast("Provenance", fields),
            schema_version=schema_version,
        )

    def dispatch(
        self,
        action: str,
        *,
        workspace_id: str,
        metadata: BaseModel | Mapping[str, Any] | None = None,
        **provenance: Unpack[Provenance],
    ) -> DispatchHandle:
        """Validate a standalone event now and write it in the background, batched with others.

        Takes ``record``'s arguments and returns at once with a handle whose ``result()`` is
        the stored event. An invalid event raises here, in the caller; a full buffer raises
        ``DispatchBufferFullError`` (per the policy). ``flush()`` waits for everything
        dispatched; leaving the ``with`` block, interpreter exit and SIGTERM drain the buffer.
        """
        return self.dispatcher.submit(
            self._standalone.encode(action, workspace_id, metadata, provenance)
        )

    @property
    def dispatcher(self) -> Dispatcher:
        if self._dispatcher is not None:  # without the lock: it is taken once, to create it
            return self._dispatcher
        with self._dispatcher_lock:
            if self._dispatcher is None:
                # Imported here: SQLAlchemy takes a fifth of a second to import, and only a
                # process that dispatches reports to the control database.
                from auditcore.store.heartbeats import Heartbeats  # noqa: PLC0415

                self._heartbeats = Heartbeats(self.settings)
                self._dispatcher = Dispatcher(
                    self._store_encoded,
                    self._decode,
                    self._dispatch_settings,
                    report=self._heartbeats.publish,
                )
                atexit.register(self._dispatcher.close)
                drain_on_sigterm(self._dispatcher.close)
            return self._dispatcher

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every dispatched event is stored; False if ``timeout`` passed first."""
        return self._dispatcher.flush(timeout) if self._dispatcher else True

    def stats(self) -> DispatcherStats | None:
        """The dispatcher's counters (None until something was dispatched)."""
        return self._dispatcher.stats() if self._dispatcher else None

    def record_many(self, drafts: Iterable[Mapping[str, Any]]) -> list[AuditEvent]:
        """Record many standalone events in one transaction; each draft takes ``record``'s
        keyword arguments (``action`` and ``workspace_id`` required). The batch is validated
        whole before anything is stored: one invalid draft stores none, and the error lists
        every problem of every draft (``build_many``)."""
        return self._store(self.build_many(drafts))

    def build_many(self, drafts: Iterable[Mapping[str, Any]]) -> list[AuditEvent]:
        """Validate every draft; ``InvalidEventError`` lists every problem of every draft,
        each located at its draft's index (``[3].metadata.email``)."""
        events: list[AuditEvent] = []
        problems: list[tuple[str, str]] = []
        failed: list[str] = []
        for index, draft in enumerate(drafts):
            try:
                events.append(self.build_draft(draft))
            except InvalidEventError as error:
                failed.append(str(error.action))
                problems += [
                    (f"[{index}].{where}".rstrip("."), what) for where, what in error.problems
                ]
        if problems:
            action = failed[0] if len(failed) == 1 else f"{len(failed)} events of the batch"
            raise InvalidEventError(action, problems)
        return events

    def update(
        self,
        kind: type[A],
        stream_id: UUID,
        run: Callable[[A], object],
        *,
        attempts: int = 5,
    ) -> list[AuditEvent]:
        """Load an aggregate, run a command on it and save, retrying on ``ConflictError``.

        ``run`` must be safe to repeat: it is run on a freshly loaded aggregate each time.
        """
        for attempt in range(1, attempts + 1):
            aggregate = self.get(kind, stream_id)
            run(aggregate)
            try:
                return self.save(aggregate)
            except ConflictError:
                if attempt == attempts:
                    raise
                time.sleep(random.uniform(0, 0.01 * 2**attempt))
        raise AssertionError("unreachable: the loop returns or raises")

    def _store(self, events: list[AuditEvent]) -> list[AuditEvent]:
        if not events:
            return []
        unique: dict[tuple[str, UUID], AuditEvent] = {}
        for event in events:
            first = unique.setdefault(_key(event), event)
            if first is not event and not _same_content(first, event):
                raise EventIdReusedError(event.event_id, "twice in one batch, with other content")
        if len(unique) < len(events):
            stored = {_key(e): e for e in self._store(list(unique.values()))}
            return [stored[_key(event)] for event in events]
        now = datetime.now(UTC)
        # Standalone events were stamped when built; aggregates' events are stamped here.
        stamped = [event if event.recorded_at else event.with_recorded_at(now) for event in events]
        try:
            self._append([self.app.mapper.to_stored_event(event) for event in stamped])
        except IntegrityError:
            return self._store_after_collision(stamped)
        return stamped

    def _store_encoded(self, batch: list[AuditStoredEvent]) -> list[AuditStoredEvent]:
        """Store standalone events already encoded (the dispatcher's batches) in one
        transaction; returns each as stored (an idempotent repeat: as first stored)."""
        if len({(stored.workspace_id, stored.event_id) for stored in batch}) == len(batch):
            try:
                # One attempt: the dispatcher retries with smaller batches, and stops when closed.
                self._append(batch, attempts=1)
            except IntegrityError:
                pass  # an id seen before: sorted out on the decoded events, below
            else:
                return batch
        events = self._store([self._decode(stored) for stored in batch])
        return [cast("AuditStoredEvent", self.app.mapper.to_stored_event(e)) for e in events]

    def _append(self, stored_events: Sequence[StoredEvent], *, attempts: int = 10) -> None:
        """One transaction (large batches on PostgreSQL go through binary COPY), attempted up to
        ``attempts`` times while the database cannot be reached, as the library does."""
        recorder = self.app.recorder
        if isinstance(recorder, BulkAppender):
            retry(TRANSIENT, max_attempts=attempts, wait=0.2)(recorder.append_once)(stored_events)
        else:
            recorder.insert_events(stored_events)

    def _decode(self, stored: StoredEvent) -> AuditEvent:
        return cast("AuditEvent", self.app.mapper.to_domain_event(stored))

    def _store_after_collision(self, events: list[AuditEvent]) -> list[AuditEvent]:
        """Tell a retried (idempotent) event from a reused id and from a version conflict.

        Only the writing events' own workspaces are looked in: what is said here (the stored
        action, stream and version) is always the caller's own data."""
        located = self.app.event_ids.locate_events([_key(event) for event in events])
        if not located:
            raise ConflictError(self._contended_streams(events))
        events_per_stream: dict[UUID, int] = {}
        for event in events:
            events_per_stream[event.stream_id] = events_per_stream.get(event.stream_id, 0) + 1
        already: dict[tuple[str, UUID], AuditEvent] = {}
        for event in events:
            if _key(event) not in located:
                continue
            stored = self._event_at(*located[_key(event)])
            if not _same_content(stored, event):
                raise EventIdReusedError(
                    event.event_id,
                    f"stored as {stored.action!r} on stream {stored.stream_id} "
                    f"version {stored.version}",
                )
            if events_per_stream[event.stream_id] > 1:
                # Part of a longer change computed from a stale aggregate: reload and rerun.
                raise ConflictError([(event.stream_id, event.version)])
            already[_key(event)] = stored
        fresh = self._store([event for event in events if _key(event) not in already])
        fresh_by_id = {_key(event): event for event in fresh}
        return [already.get(_key(event)) or fresh_by_id[_key(event)] for event in events]

    def _contended_streams(self, events: Iterable[AuditEvent]) -> list[tuple[UUID, int]]:
        first_versions: dict[UUID, int] = {}
        for event in events:
            first_versions.setdefault(event.stream_id, event.version)
        contended = []
        for stream_id, version in first_versions.items():
            head = self.app.recorder.select_events(stream_id, desc=True, limit=1)
            if head and head[0].originator_version >= version:
                contended.append((stream_id, version))
        return contended or list(first_versions.items())

    # Reading from the store.

    def get(
        self,
        kind: type[A],
        stream_id: UUID,
        *,
        workspace_id: str | None = None,
        as_of: datetime | None = None,
    ) -> A:
        """Rebuild an aggregate from its stored events (as it was at ``as_of``, if given)."""
        events = self.history(stream_id, workspace_id=workspace_id, as_of=as_of)
        aggregate = kind.project(None, events)
        if aggregate is None:  # pragma: no cover - history() never returns an empty list
            raise StreamNotFoundError(stream_id, kind.stream_type)
        return aggregate

    def history(
        self,
        stream_id: UUID,
        *,
        workspace_id: str | None = None,
        as_of: datetime | None = None,
    ) -> list[AuditEvent]:
        """A stream's events in version order (upcast to current schemas).

        With ``as_of``, only what the store had recorded by then: the longest run of versions
        recorded at or before that moment (a stream's state is always a prefix of it).
        """
        events = cast("list[AuditEvent]", list(self.app.events.get(stream_id)))
        if not events or (workspace_id is not None and events[0].workspace_id != workspace_id):
            raise StreamNotFoundError(stream_id)
        if as_of is not None:
            moment = to_utc(as_of)
            events = list(
                itertools.takewhile(
                    lambda e: e.recorded_at is None or e.recorded_at <= moment, events
                )
            )
            if not events:
                raise NotFoundError(f"stream {stream_id} had no events yet at {moment.isoformat()}")
        return events

    def event(self, event_id: UUID, *, workspace_id: str) -> AuditEvent:
        """One event by its id in its workspace (ids are unique per workspace), from the store."""
        location = self.app.event_ids.locate_events([(workspace_id, event_id)]).get(
            (workspace_id, event_id)
        )
        if location is None:
            raise StreamNotFoundError(event_id, "event")
        return self._event_at(*location)

    @cached_property
    def secrets(self) -> ServerSecrets:
        """The installation's own secrets (the cursor-signing key), in the control database."""
        # Imported here: SQLAlchemy takes a fifth of a second to import, and only processes
        # that page through queries need it.
        from auditcore.store.secrets import ServerSecrets  # noqa: PLC0415

        return ServerSecrets(self.settings)

    # Tamper evidence.

    @cached_property
    def integrity(self) -> Integrity:
        """The store's Merkle logs: follower, checkpoints, proofs, exports and verify
        (settings from the environment unless given to the constructor)."""
        # Imported here: the cryptography package is needed only by processes that use it.
        from auditcore.integrity.service import Integrity  # noqa: PLC0415
        from auditcore.integrity.settings import IntegritySettings  # noqa: PLC0415

        return Integrity(self.app, self._integrity_settings or IntegritySettings.from_env())

    # Erasure (crypto-shredding).

    def erase(self, workspace_id: str, subject_id: str, **recorded_as: Any) -> ErasureResult:
        """Destroy a subject's data keys in a workspace, record it, and re-project its streams
        (``auditcore.lifecycle.erasure``; ``recorded_as``: actor, source, context)."""
        from auditcore.lifecycle.erasure import erase  # noqa: PLC0415

        if self.subject_keys is None:
            from auditcore.lifecycle.master import MasterKeyError  # noqa: PLC0415

            raise MasterKeyError(
                "erasure needs encryption: set AUDITCORE_MASTER_KEY_FILE or AUDITCORE_MASTER_KEY"
            )
        return erase(self, self.subject_keys, workspace_id, subject_id, **recorded_as)

    # The read side (ClickHouse).

    @cached_property
    def read_models(self) -> ReadModelRegistry:
        return load_read_models()

    @cached_property
    def projections(self) -> ProjectionRunner:
        return ProjectionRunner(
            self.app,
            self.settings.clickhouse_target,
            self.read_models,
            stall_after=self.settings.stall_after,
        )

    @property
    def clickhouse(self) -> Client:
        """This thread's ClickHouse client (clients must not be shared between threads: code
        that may run on another thread later holds ``clickhouse_clients`` instead)."""
        return self.clickhouse_clients()

    @property
    def migrated(self) -> bool:
        """Whether this process has created the read models' tables (``migrate``)."""
        return self._migrated

    def migrate(self) -> list[str]:
        """Create the read models' tables (and the positions table) where missing."""
        created = self.projections.migrate(self.clickhouse)
        self._migrated = True
        return created

    def project(self, progress: Progress | None = None) -> dict[str, int]:
        """Bring every read model up to date with the store; return events processed per model."""
        return self.projections.catch_up(self.clickhouse, progress)

    def rebuild_part(
        self, name: str, *, stream_id: UUID | None = None, workspace_id: str | None = None
    ) -> int:
        """Re-project one stream or one workspace of a read model, replacing just its rows."""
        if not self._migrated:
            self.migrate()
        return rebuild_part(
            self.read_models.get(name),
            self.app,
            self.settings.clickhouse_target,
            self.clickhouse,
            stream_id=stream_id,
            workspace_id=workspace_id,
            guard=self.projections.exclusive(name),
        )

    def rebuild(
        self,
        name: str,
        *,
        keep_old: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> RebuildResult:
        """Rebuild one read model beside the live one from the whole log, then swap it in."""
        return rebuild(
            self.read_models.get(name),
            self.app,
            self.settings.clickhouse_target,
            self.clickhouse,
            keep_old=keep_old,
            progress=progress,
            guard=self.projections.exclusive(name),
        )

    def reader(
        self,
        workspace_id: str,
        *,
        entitlements: frozenset[str] | None = None,
        limits: Mapping[str, Any] | None = None,
        fixed_filters: Mapping[str, str] | None = None,
    ) -> WorkspaceReader:
        """Ask questions of one workspace's read models (``entitlements=None``: trusted caller;
        ``limits``: ClickHouse settings bounding each query, e.g. ``max_execution_time``;
        ``fixed_filters``: ``audit_events`` filters narrowing every read, a viewer token's)."""
        if not self._migrated:
            self.migrate()
        return WorkspaceReader(
            self.clickhouse_clients,
            self.read_models,
            workspace_id,
            entitlements,
            cursor_key=self._cursor_key,
            limits=limits,
            fixed_filters=fixed_filters,
            points=self.points,
        )

    @cached_property
    def points(self) -> StorePoints:
        """Point questions (by id, by stream) answered by the store (``WorkspaceReader``)."""
        return StorePoints(self.app)

    def _cursor_key(self) -> bytes:
        from auditcore.store.secrets import CURSOR_SECRET  # noqa: PLC0415 - as in ``secrets``

        return self.secrets.get(CURSOR_SECRET)

    def _event_at(self, stream_id: UUID, version: int) -> AuditEvent:
        (event,) = self.app.events.get(stream_id, gt=version - 1, lte=version)
        return cast("AuditEvent", event)


def _key(event: AuditEvent) -> tuple[str, UUID]:
    """What names an event: its id within its workspace."""
    return event.workspace_id, event.event_id


def _same_content(stored: AuditEvent, candidate: AuditEvent) -> bool:
    return _same_stream(stored, candidate) and all(
        getattr(stored, name) == getattr(candidate, name) for name in _IDEMPOTENCY_FIELDS
    )


def _same_stream(stored: AuditEvent, candidate: AuditEvent) -> bool:
    """Also true for a stream started before stream ids were derived from the workspace (its
    id is its first event's id): retrying that event now derives the new id."""
    if stored.stream_id == candidate.stream_id:
        return True
    return (
        stored.stream_id == stored.event_id
        and stored.version == candidate.version == 1
        and candidate.stream_id == stream_id_for(candidate.workspace_id, candidate.event_id)
    )
