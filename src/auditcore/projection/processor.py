"""A processor moves events from the store into one read model's ClickHouse table.

Batch by batch: read the log after the table's position; record the intent; write the
batch's rows in one statement (event tables: computed by ClickHouse from the stored events;
state tables: folded in Python from each stream's current row); record the position. On a
PostgreSQL store an event table's batch comes as lines PostgreSQL built
(``auditcore.projection.lines``), read while the previous batch is written, and goes to
ClickHouse untouched; a batch that needs Python (sealed fields, upcasting), a batch ClickHouse
refuses and an interrupted batch take the decoded path.
``auditcore.projection.tracking`` says why that is exact whatever instant the process is
killed at. When ClickHouse refuses the statement for its data, nothing of it was written;
the refused events are isolated with probes into a table that keeps nothing, parked
(``auditcore.projection.deadletters``), and the rest written. Any other failure
(ClickHouse unreachable, …) propagates: the step is retried later and finishes the intent.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, cast
from uuid import UUID

import orjson
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from auditcore.clickhouse.bulk import insert_select
from auditcore.clickhouse.connection import ClickHouseTarget, connect, query_dicts
from auditcore.clickhouse.ddl import DEAD_LETTERS_TABLE, PROBE_SUFFIX, TRACKING_TABLE
from auditcore.errors import (
    DefinitionChangedError,
    OrphanInsertError,
    RefusedByReadModelError,
    StoreMismatchError,
    UntrackedRowsError,
)
from auditcore.projection import deadletters
from auditcore.projection.deadletters import DeadLetter, refuses_data, short_error
from auditcore.projection.lines import LineBatch, LineReader, ReadAhead
from auditcore.projection.log import LoggedEvent, LogReader, source_line
from auditcore.projection.records import EventRecord, decode_logged, upcast_state
from auditcore.projection.tracking import TrackedPosition, read_tracking, record, table_key
from auditcore.projection.wakeup import wakeup_for
from auditcore.readmodel.fields import SOURCE_SETTINGS, SOURCE_STRUCTURE
from auditcore.readmodel.model import EventTable, ReadModel, Row, StateTable
from auditcore.store.application import AuditApplication
from auditcore.store.mapper import AuditMapper

_REFERENCES = 20
"""Events before a batch tried when all of it is refused, to tell bad events from a bad model."""
_KEYS_PER_LOOKUP = 2_000
"""Keys per current-rows lookup: a UUID travels as 36 characters and a separator, so 2,000 make
~80 KB, under a server's 128 KiB limit on one query parameter (http_max_field_value_size)."""
_ORPHAN_WAIT = 600.0
"""How long a redo waits for a dead writer's insert to end before it fails (and retries)."""
# Folded rows must match the table exactly: a misnamed column is an error, not a silent skip.
_FOLDED_SETTINGS: dict[str, str | int] = {
    "date_time_input_format": "best_effort",
    "input_format_skip_unknown_fields": 0,
}
# A batch's rows as one block: no parallel insert streams and no squashing threshold, so the
# rows are all computed (and any refusal raised) before the first part is written, and each
# partition gets exactly one part, committed whole. Parts across partitions are committed one
# by one: an intent covers that. Never deduplicated: which parts exist is checked instead.
_ONE_BLOCK: dict[str, str | int] = {
    "max_insert_threads": 1,
    "min_insert_block_size_rows": 1 << 62,
    "min_insert_block_size_bytes": 1 << 62,
    "max_partitions_per_insert_block": 0,
    "insert_deduplicate": 0,
}


@dataclass(frozen=True)
class Rows:
    """A batch ready to write: its items (stored events for event tables, folded rows for
    state tables), how each becomes a JSON line, and the events each item stands for."""

    items: Sequence[Any]
    encode: Callable[[Any], bytes]
    events_of: Callable[[int], list[LoggedEvent]]
    """The events item ``i`` stands for: itself, or its stream's events of the batch."""
    select: str
    """``SELECT`` turning the lines (``{source}``) into the table's rows."""
    structure: str
    settings: dict[str, str | int]
    refused: list[DeadLetter]
    """Events refused before ClickHouse saw them (decoding, upcasting, the fold)."""
    lines: bytes | None = None
    """A batch of lines as PostgreSQL built them: the payload, with no ``items`` until
    ``decoded`` (when ClickHouse refuses some of them)."""
    decoded: Callable[[], Rows] | None = None

    def payload(self) -> bytes:
        if self.lines is not None:
            return self.lines
        return b"\n".join(map(self.encode, self.items))

    def only(self, indexes: Sequence[int]) -> Rows:
        return replace(
            self,
            items=[self.items[i] for i in indexes],
            events_of=lambda j: self.events_of(indexes[j]),
            refused=[],
            lines=None,
            decoded=None,
        )


class Processor:
    """Projects the store into one read model. Not thread-safe: one thread runs one processor
    (it opens its own ClickHouse client in that thread)."""

    def __init__(
        self,
        model: ReadModel,
        app: AuditApplication,
        target: ClickHouseTarget,
        *,
        batch_size: int = 20_000,
        client: Client | None = None,
        table: str | None = None,
        lines: bool = True,
    ) -> None:
        """``lines``: read an event table's batches as lines where the store allows (the
        fast path); False decodes every batch in Python (as SQLite stores always do)."""
        self.model = model
        self.table = table or model.table_name
        self.probe_table = self.table + PROBE_SUFFIX
        self.app = app
        self.target = target
        self.batch_size = batch_size
        self.log = LogReader(app)
        self.position = 0
        self.tracked: TrackedPosition | None = None
        self._client = client
        self._first_event_id: str | None = None
        self._probe_ready = False
        self._synced = False
        self._batch_id: str | None = None
        """The query id of the batch being written (its intent's)."""
        self._accepted: LoggedEvent | None = None
        """The last event written: proof that the read model's SQL works."""
        # Where personal fields are sealed, nearly every batch needs them opened in Python.
        sealed = cast("AuditMapper", app.mapper).sealer is not None
        reader = LineReader.of(app) if lines and isinstance(model, EventTable) else None
        self._ahead = (
            ReadAhead(
                lambda p: reader.after(p, self.batch_size, self.app.registry.upcasting_actions())
            )
            if reader is not None and not sealed
            else None
        )

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect(self.target)
        return self._client

    def resume(self) -> int:
        """Read the table's tracking (finishing a batch a crash interrupted); return the
        position from which the next batch starts."""
        tracked = self._tracking()
        if tracked.unfinished:
            self._project(tracked, self.log.between(tracked.position, tracked.intent))
        return self.position

    def step(self) -> int:
        """Process the next batch; return how many events it read (0 when caught up).

        The table's tracking is read first each time, so a table swapped in by a rebuild is
        continued from its own position, and an interrupted batch is finished first."""
        tracked = self._tracking()
        if tracked.unfinished:
            return self._project(tracked, self.log.between(tracked.position, tracked.intent))
        if self._ahead is not None:
            lines = self._ahead.take(tracked.position)
            if lines.lines is not None:
                if not lines.events:
                    return 0
                self._ahead.start(lines.last)  # read while this batch is written
                return self._project(tracked, lines)
        batch = self.log.after(tracked.position, self.batch_size)
        if not batch:
            return 0
        return self._project(tracked, batch)

    def catch_up(self, progress: Callable[[int], None] | None = None) -> int:
        """Process until no event is left; return how many events were processed."""
        total = 0
        while count := self.step():
            total += count
            if progress:
                progress(count)
        return total

    def follow(
        self,
        stop: threading.Event,
        *,
        linger: float = 0.05,
        poll: float = 0.2,
        on_step: Callable[[int], None] | None = None,
        guard: AbstractContextManager[object] | None = None,
    ) -> None:
        """Catch up, then keep following new events until ``stop`` is set.

        Each batch runs inside ``guard`` (if given), which a rebuild in the same process takes
        to swap tables between two batches. ``on_step`` hears of every step that went through,
        with the number of events it read (0 once caught up).
        """
        wakeup = wakeup_for(self.app, stop, poll)
        try:
            while not stop.is_set():
                with guard or nullcontext():
                    count = self.step()
                if on_step:
                    on_step(count)
                if count:
                    continue
                wakeup.wait(timeout=1.0)
                # Let a burst of commits accumulate into one batch.
                stop.wait(linger)
        finally:
            wakeup.close()

    def close(self) -> None:
        if self._ahead is not None:
            self._ahead.wait()
        if self._client is not None:
            self._client.close()
            self._client = None

    def store_id(self) -> str:
        """The event id of the store's first event, or "" while the store is empty."""
        if self._first_event_id is None:
            first = self.log.after(0, 1)
            self._first_event_id = str(orjson.loads(first[0].state)["event_id"]) if first else ""
        return self._first_event_id

    # Tracking.

    def _tracking(self) -> TrackedPosition:
        if self.target.cluster and not self._synced:
            # This node may not hold yet every part another replica committed (a processor
            # that ran against it before a restart): wait for them, or the unfinished batch
            # would be judged against an incomplete table and written twice.
            for table in (TRACKING_TABLE, DEAD_LETTERS_TABLE, self.table):
                self.client.command(self.target.ddl.sync_replica(table))
            self._synced = True
        key = table_key(self.client, self.table)
        if key is None:
            raise UntrackedRowsError(
                f"the read model table {self.table} does not exist in "
                f"{self.target.describe()}: run `auditcore migrate` first"
            )
        tracked = read_tracking(self.client, [key]).get(key)
        if tracked is None:
            if self._holds_rows():
                raise UntrackedRowsError(
                    f"the table {self.table} in {self.target.describe()} holds rows but no "
                    "record of which events they came from (it was built by an older version "
                    "of auditcore, or its tracking was deleted). Rebuild it: "
                    f"`auditcore projections rebuild {self.model.name}`."
                )
            tracked = TrackedPosition(
                key, self.table, 0, 0, 0, self.model.fingerprint(), self.store_id(), None
            )
        elif tracked.store_id and self.store_id() and tracked.store_id != self.store_id():
            raise StoreMismatchError(
                f"the read model {self.table} in {self.target.describe()} was built "
                f"from another event store than {self.app.settings.describe_event_store()} "
                "(their first events differ). Give each event store its own ClickHouse "
                "database (AUDITCORE_CLICKHOUSE=chdb://PATH?database=NAME), or drop the "
                "read model's tables to rebuild them from this store."
            )
        declared = self.model.fingerprint()
        if tracked.fingerprint and tracked.fingerprint != declared:
            raise DefinitionChangedError(self.model.name, tracked.fingerprint, declared)
        self.tracked, self.position = tracked, tracked.position
        return tracked

    def _holds_rows(self) -> bool:
        result = self.client.query(f"SELECT count() FROM `{self.table}`").result_rows
        return bool(result[0][0])

    # One batch.

    def _project(self, tracked: TrackedPosition, batch: Sequence[LoggedEvent] | LineBatch) -> int:
        """Write ``batch`` (after ``tracked.position``) exactly once; return its length."""
        after, key = tracked.position, tracked.table_key
        last, length = (
            (batch.last, batch.events)
            if isinstance(batch, LineBatch)
            else (batch[-1].position, len(batch))
        )
        written: set[str] = set()
        if tracked.unfinished:
            assert not isinstance(batch, LineBatch)  # a redo reads its exact range, decoded
            # The writer that recorded this intent may have died with its insert still
            # running on the server: that insert finishes (or fails) before the table is
            # asked which partitions it holds, or it could commit after the answer.
            self._await_insert(_insert_id(tracked))
            parked = deadletters.positions_between(self.client, key, after, last)
            batch = [event for event in batch if event.position not in parked]
            written = self._partitions_holding(after, last)
        else:
            intent = tracked.next(position=after, intent=last)
            tracked = record(self.client, replace(intent, store_id=self.store_id()))
        rows = self.rows(batch, key=key)
        deadletters.park(self.client, rows.refused)
        self._batch_id = _insert_id(tracked)
        try:
            self.write(rows, key=key, skip=written)
        finally:
            self._batch_id = None
        self.tracked = record(self.client, tracked.next(position=last))
        self.position = last
        return length

    def rows(
        self,
        batch: Sequence[LoggedEvent] | LineBatch,
        *,
        key: str = "",
        from_scratch: bool = False,
    ) -> Rows:
        """``batch`` made ready to write (``from_scratch``: state tables fold without the
        streams' current rows). Read models hold personal fields opened (or erased)."""
        if isinstance(batch, LineBatch):
            assert isinstance(self.model, EventTable)
            after, last = batch.after, batch.last
            return replace(
                self._computed_rows(self.model, [], []),
                lines=batch.lines,
                decoded=lambda: self.rows(self.log.between(after, last), key=key),
            )
        opened = cast("AuditMapper", self.app.mapper).readable_states([e.state for e in batch])
        if any(s is not e.state for e, s in zip(batch, opened, strict=True)):
            batch = [e._replace(state=s) for e, s in zip(batch, opened, strict=True)]
        if isinstance(self.model, EventTable):
            return self._computed(self.model, batch, key)
        if isinstance(self.model, StateTable):
            return self._folded(self.model, batch, key, from_scratch)
        raise TypeError(f"unknown kind of read model: {type(self.model).__name__}")

    def write(self, rows: Rows, *, key: str = "", skip: set[str] | None = None) -> list[DeadLetter]:
        """Write ``rows`` in one statement, but for the partitions in ``skip``. Items whose
        data ClickHouse refuses are isolated, parked, and the others written; return them."""
        everything = list(range(len(rows.items)))
        if not everything and not rows.lines:
            return []
        error = _refusal(lambda: self._insert(self.table, rows, skip))
        if error is None:
            if everything:
                self._accepted = rows.events_of(everything[-1])[-1]
            return []
        early: list[DeadLetter] = []
        if rows.decoded is not None:
            # Nothing of the lines was written (one block): decoded, the events ClickHouse
            # refuses are found as in any batch.
            rows = rows.decoded()
            early = rows.refused
            deadletters.park(self.client, early)
            everything = list(range(len(rows.items)))
            if not everything:
                return early
        refused = self._isolate(rows, everything, error)
        letters = [
            self._letter(key, event, problem)
            for index, problem in refused.items()
            for event in rows.events_of(index)
        ]
        deadletters.park(self.client, letters)
        good = [index for index in everything if index not in refused]
        if good:
            self._insert(self.table, rows.only(good), skip)
            self._accepted = rows.events_of(good[-1])[-1]
        return early + letters

    def probe(self, rows: Rows, *, key: str = "") -> tuple[Rows, list[DeadLetter]]:
        """Check ``rows`` without writing them: the rows ClickHouse accepts, and letters for
        every event refused, before or by ClickHouse (not parked)."""
        everything = list(range(len(rows.items)))
        error = _refusal(lambda: self._insert(self.probe_table, rows)) if everything else None
        refused = self._isolate(rows, everything, error) if error is not None else {}
        letters = rows.refused + [
            self._letter(key, event, problem)
            for index, problem in refused.items()
            for event in rows.events_of(index)
        ]
        return rows.only([i for i in everything if i not in refused]), letters

    def _isolate(self, rows: Rows, indexes: list[int], error: str) -> dict[int, str]:
        """The items ClickHouse refuses, found by halving with probes that write nothing.
        If it refuses them all, it must still take an item known to be good, else the read
        model itself (its SQL) or ClickHouse is at fault: nothing is parked, the step fails."""
        refused = _isolate(
            indexes, lambda subset: self._insert(self.probe_table, rows.only(subset)), error
        )
        if len(refused) < len(indexes):
            return refused
        if isinstance(self.model, EventTable) and self._known_good_goes_through(rows):
            return refused
        if isinstance(self.model, StateTable):
            return refused  # folded rows have no reference; a fold's own errors are parked
        first = rows.events_of(0)[0].position
        raise RefusedByReadModelError(
            f"the read model {self.model.name} refuses every event of the batch from "
            f"position {first}, and no event known to be good goes through either: its SQL "
            f"or ClickHouse is at fault, not the events ({error})"
        )

    def _known_good_goes_through(self, rows: Rows) -> bool:
        """Whether the last event accepted (or else one of those just before the batch) still
        goes through the read model's SQL."""
        references = [self._accepted] if self._accepted else []
        if not references:
            before = rows.events_of(0)[0].position
            earlier = self.log.after(max(0, before - 1 - _REFERENCES), _REFERENCES)
            references = [
                e for e in earlier if e.position < before and self.model.handles_action(e.action)
            ]
        probe = replace(rows, items=references)
        return bool(references) and _refusal(lambda: self._insert(self.probe_table, probe)) is None

    def _insert(self, table: str, rows: Rows, skip: set[str] | None = None) -> None:
        if table == self.probe_table:
            self._ensure_probe()
        select = rows.select
        if skip:
            select = (
                f"SELECT * FROM ({select}) WHERE {self._part_key()} NOT IN {{skip:Array(String)}}"
            )
        insert_select(
            self.client,
            self.target,
            table,
            self.model.table.column_names,
            select,
            rows.payload(),
            rows.structure,
            {**rows.settings, **_ONE_BLOCK},
            {"skip": sorted(skip)} if skip else None,
            query_id=self._batch_id if table == self.table and not self.target.embedded else None,
        )

    def _await_insert(self, query_id: str) -> None:
        """Wait until no insert runs as ``query_id`` (a dead writer's, of the same intent).

        A server refuses a query whose id is running already, so a query under that id goes
        through only once the other one is over; on a cluster the other one may run on any
        replica, so they are asked too. The inserts of a batch run under that id as well: an
        old insert and a redo can never run at once. (chDB runs in this process: its
        inserts died with the writer.)"""
        if self.target.embedded:
            return
        deadline = time.monotonic() + _ORPHAN_WAIT
        while True:
            try:
                self.client.command("SELECT 1", settings={"query_id": query_id})
                if not self.target.cluster or not self._running_on_replicas(query_id):
                    return
            except DatabaseError as error:
                if "QUERY_WITH_SAME_ID_IS_ALREADY_RUNNING" not in str(error):
                    raise
            if time.monotonic() > deadline:
                raise OrphanInsertError(
                    f"an insert into {self.table} of a writer that stopped still runs after "
                    f"{_ORPHAN_WAIT:.0f} s (query id {query_id}); retrying later"
                )
            time.sleep(0.2)

    def _running_on_replicas(self, query_id: str) -> bool:
        cluster = (self.target.cluster or "").replace("\\", "\\\\").replace("'", "\\'")
        rows = self.client.query(
            f"SELECT count() FROM clusterAllReplicas('{cluster}', system.processes) "
            "WHERE query_id = {id:String} OR initial_query_id = {id:String}",
            parameters={"id": query_id},
            settings={"skip_unavailable_shards": 1},
        ).result_rows
        return bool(rows[0][0])

    def _ensure_probe(self) -> None:
        if not self._probe_ready:
            if table_key(self.client, self.probe_table) is None:
                probe = self.target.ddl.create_probe(self.probe_table, self.model.table)
                self.client.command(probe)
            self._probe_ready = True

    def _partitions_holding(self, after: int, last: int) -> set[str]:
        """Partitions of the table holding a row from events in (after, last]: their parts
        of that batch committed (a part is committed whole)."""
        rows = self.client.query(
            f"SELECT DISTINCT {self._part_key()} FROM `{self.table}` "
            "WHERE position > {after:UInt64} AND position <= {last:UInt64}",
            parameters={"after": after, "last": last},
        ).result_rows
        return {row[0] for row in rows}

    def _part_key(self) -> str:
        """Which part of a batch a row is in: its partition; on a sharded cluster its
        partition and its workspace (the sharding key), so that rows with one key are on
        one shard, in one part, committed whole."""
        partition = self.model.table.partition_by or "''"
        if self.target.sharded:
            return f"toString(cityHash64(workspace_id, toString({partition})))"
        return f"toString({partition})"

    # Event tables: ClickHouse computes the rows.

    def _computed(self, model: EventTable, batch: Sequence[LoggedEvent], key: str) -> Rows:
        registry = self.app.registry
        upcasting = registry.upcasting_actions()
        refused: list[DeadLetter] = []
        if not model.handles and not upcasting:
            return self._computed_rows(model, batch, refused)  # every event as stored
        events: list[LoggedEvent] = []
        for event in batch:
            if not model.handles_action(event.action):
                continue
            try:
                events.append(upcast_state(registry, event) if event.action in upcasting else event)
            except Exception as error:
                refused.append(self._letter(key, event, error))
        return self._computed_rows(model, events, refused)

    @staticmethod
    def _computed_rows(
        model: EventTable, events: Sequence[LoggedEvent], refused: list[DeadLetter]
    ) -> Rows:
        return Rows(
            items=events,
            encode=source_line,
            events_of=lambda index: [events[index]],
            select=model.select_sql("{source}"),
            structure=SOURCE_STRUCTURE,
            settings=SOURCE_SETTINGS,
            refused=refused,
        )

    # State tables: the fold computes the rows.

    def _folded(
        self, model: StateTable, batch: Sequence[LoggedEvent], key: str, from_scratch: bool
    ) -> Rows:
        registry = self.app.registry
        refused: list[DeadLetter] = []
        records: list[EventRecord] = []
        logged: dict[int, LoggedEvent] = {}
        for event in batch:
            if not model.handles_action(event.action):
                continue
            try:
                records.append(decode_logged(registry, event))
            except Exception as error:
                refused.append(self._letter(key, event, error))
                continue
            logged[event.position] = event
        previous: dict[UUID, Row] = {}
        if records and not from_scratch:
            previous = self._current_rows(model, {record.stream_id for record in records})
        failed: dict[int, str] = {}
        folded = model.rows_for(records, previous, failed)
        refused += [self._letter(key, logged[p], error) for p, error in failed.items()]
        # A row stands for its stream's events in this batch (parked with it if refused).
        streams: dict[UUID, list[LoggedEvent]] = {}
        for decoded in records:
            if decoded.position not in failed:
                streams.setdefault(decoded.stream_id, []).append(logged[decoded.position])
        return Rows(
            items=folded,
            encode=orjson.dumps,
            events_of=lambda index: streams[folded[index][model.key_column]],
            select="SELECT * FROM {source}",
            structure=", ".join(f"`{c.name}` {c.type}" for c in model.table.columns),
            settings=_FOLDED_SETTINGS,
            refused=refused,
        )

    def _current_rows(self, model: StateTable, keys: set[UUID]) -> dict[UUID, Row]:
        found: dict[UUID, Row] = {}
        ordered = sorted(keys)
        for start in range(0, len(ordered), _KEYS_PER_LOOKUP):
            rows = query_dicts(
                self.client,
                f"SELECT * FROM `{self.table}` FINAL "
                f"WHERE `{model.key_column}` IN {{keys:Array(UUID)}}",
                {"keys": ordered[start : start + _KEYS_PER_LOOKUP]},
            )
            found.update({row[model.key_column]: row for row in rows})
        return found

    def _letter(self, key: str, event: LoggedEvent, error: BaseException | str) -> DeadLetter:
        return DeadLetter.of(key, self.model.name, event, error)


def _insert_id(intent: TrackedPosition) -> str:
    """The query id of a batch's inserts: the intent's (its table's key and sequence)."""
    return f"auditcore-{intent.table_key}-{intent.seq}"


def _refusal(action: Callable[[], None]) -> str | None:
    """Run ``action``; return ClickHouse's refusal of its data, or None once it went through.
    Any other failure propagates (the step is retried, nothing is parked)."""
    try:
        action()
    except Exception as error:
        if not refuses_data(error):
            raise
        return short_error(error)
    return None


def _isolate(
    indexes: Sequence[int], insert: Callable[[Sequence[int]], None], error: str
) -> dict[int, str]:
    """``insert`` refused ``indexes`` with ``error``: find the items it refuses alone."""
    if len(indexes) == 1:
        return {indexes[0]: error}
    middle = len(indexes) // 2
    found: dict[int, str] = {}
    for half in (indexes[:middle], indexes[middle:]):
        refusal = _refusal(lambda half=half: insert(half))  # type: ignore[misc]
        if refusal is not None:
            found |= _isolate(half, insert, refusal)
    return found
