"""A processor moves events from the store into one read model's ClickHouse table.

Batch by batch: read the log after the table's position; compute the batch's rows into the
table's staging table (event tables: by ClickHouse, from the stored events; state tables: by
the fold, in Python, from each stream's current row), isolating the events that ClickHouse
or the fold refuses; record the intent; write the staged rows to the table one partition per
insert; record the position. ``auditcore.projection.tracking`` says why that is exact
whatever instant the process is killed at; ``auditcore.projection.deadletters`` what
becomes of refused events. Any other failure (ClickHouse unreachable, …) propagates: the
step is retried later and finishes the same intent.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from uuid import UUID

import orjson
from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.bulk import insert_select, settings_clause
from auditcore.clickhouse.connection import ClickHouseTarget, connect, query_dicts
from auditcore.clickhouse.ddl import STAGING_SUFFIX, staging_table_sql
from auditcore.errors import (
    DefinitionChangedError,
    RefusedByReadModelError,
    StoreMismatchError,
    UntrackedRowsError,
)
from auditcore.projection import deadletters
from auditcore.projection.deadletters import DeadLetter, refuses_data, short_error
from auditcore.projection.log import LoggedEvent, LogReader, source_rows
from auditcore.projection.records import EventRecord, decode_logged, upcast_state
from auditcore.projection.tracking import TrackedPosition, read_tracking, record, table_key
from auditcore.projection.wakeup import wakeup_for
from auditcore.readmodel.fields import SOURCE_SETTINGS, SOURCE_STRUCTURE
from auditcore.readmodel.model import EventTable, ReadModel, Row, StateTable
from auditcore.store.application import AuditApplication

_REFERENCES = 20
"""Events before a batch tried when all of it is refused, to tell bad events from a bad model."""
_KEYS_PER_LOOKUP = 5_000
# Folded rows must match the table exactly: a misnamed column is an error, not a silent skip.
_FOLDED_SETTINGS: dict[str, str | int] = {
    "date_time_input_format": "best_effort",
    "input_format_skip_unknown_fields": 0,
}
# One partition's rows as one block, so one part: no parallel insert streams, no squashing
# threshold that could cut it in two. Never deduplicated: which parts exist is checked instead.
_ONE_PART: dict[str, str | int] = {
    "max_insert_threads": 1,
    "min_insert_block_size_rows": 1 << 62,
    "min_insert_block_size_bytes": 1 << 62,
    "insert_deduplicate": 0,
}


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
    ) -> None:
        self.model = model
        self.table = table or model.table_name
        self.staging = self.table + STAGING_SUFFIX
        self.app = app
        self.target = target
        self.batch_size = batch_size
        self.log = LogReader(app)
        self.position = 0
        self.tracked: TrackedPosition | None = None
        self._client = client
        self._first_event_id: str | None = None
        self._staging_ready = False
        self._accepted: LoggedEvent | None = None
        """The last event staged without refusal: proof that the read model works."""

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

    def _project(self, tracked: TrackedPosition, batch: Sequence[LoggedEvent]) -> int:
        """Write ``batch`` (after ``tracked.position``) exactly once; return its length."""
        after, finishing = tracked.position, tracked.unfinished
        known: set[int] = set()
        if finishing:
            known = deadletters.positions_between(
                self.client, tracked.table_key, after, tracked.intent
            )
        refused = self.stage(batch, known, key=tracked.table_key)
        partitions = self._staged_partitions()
        last = batch[-1].position
        store_id = tracked.store_id or self.store_id()
        if not finishing:
            intent = replace(tracked.next(position=after, intent=last), store_id=store_id)
            tracked = record(self.client, intent)
        deadletters.park(self.client, refused)
        written = self._partitions_holding(after, last) if finishing else set()
        self.write_staged([p for p in partitions if p not in written])
        self.tracked = record(self.client, tracked.next(position=last))
        self.position = last
        return len(batch)

    def stage(
        self,
        batch: Sequence[LoggedEvent],
        known: set[int] | None = None,
        *,
        key: str = "",
        from_scratch: bool = False,
    ) -> list[DeadLetter]:
        """Compute ``batch``'s rows into the staging table (emptied first), leaving out the
        positions in ``known``; return letters for the events it refused (not yet parked).
        ``from_scratch``: fold state tables without the streams' current rows."""
        self._ensure_staging()
        self.client.command(f"TRUNCATE TABLE `{self.staging}`")
        candidates = [event for event in batch if event.position not in (known or set())]
        if isinstance(self.model, EventTable):
            return self._stage_computed(self.model, candidates, key)
        if isinstance(self.model, StateTable):
            return self._stage_folded(self.model, candidates, key, from_scratch)
        raise TypeError(f"unknown kind of read model: {type(self.model).__name__}")

    def write_staged(self, partitions: Sequence[str] | None = None) -> None:
        """Copy the staged rows to the table, one insert (one part) per partition."""
        if partitions is None:
            partitions = self._staged_partitions()
        columns = ", ".join(f"`{name}`" for name in self.model.table.column_names)
        by = self.model.table.partition_by
        for partition in partitions:
            where = f" WHERE toString({by}) = {{partition:String}}" if by else ""
            self.client.command(
                f"INSERT INTO `{self.table}` ({columns}) SELECT {columns} "
                f"FROM `{self.staging}`{where}{settings_clause(_ONE_PART)}",
                parameters={"partition": partition},
            )

    def _ensure_staging(self) -> None:
        if not self._staging_ready:
            self.client.command(staging_table_sql(self.staging, self.model.table))
            self._staging_ready = True

    def _staged_partitions(self) -> list[str]:
        """The partitions the staged rows fall in ("" for a table without partitions)."""
        by = self.model.table.partition_by
        if not by:
            staged = self.client.query(f"SELECT count() FROM `{self.staging}`").result_rows
            return [""] if staged[0][0] else []
        rows = self.client.query(
            f"SELECT DISTINCT toString({by}) AS p FROM `{self.staging}` ORDER BY p"
        ).result_rows
        return [row[0] for row in rows]

    def _partitions_holding(self, after: int, last: int) -> set[str]:
        """Partitions of the table holding a row from events in (after, last]: their parts
        of that batch committed (a part is committed whole)."""
        by = self.model.table.partition_by or "''"
        rows = self.client.query(
            f"SELECT DISTINCT toString({by}) FROM `{self.table}` "
            "WHERE position > {after:UInt64} AND position <= {last:UInt64}",
            parameters={"after": after, "last": last},
        ).result_rows
        return {row[0] for row in rows}

    def _stage_all(self, count: int, insert: Callable[[Sequence[int]], None]) -> dict[int, str]:
        """Stage items ``0 … count-1`` with ``insert``; return the items whose data ClickHouse
        refuses (isolated by halving), with the error. The others end up staged."""
        everything = list(range(count))
        error = _refusal(lambda: insert(everything)) if everything else None
        if error is None:
            return {}
        refused = _isolate(everything, insert, error)
        # Probes leave rows behind (and a refused insert may have staged some): start over.
        self.client.command(f"TRUNCATE TABLE `{self.staging}`")
        good = [index for index in everything if index not in refused]
        if good:
            insert(good)
        return refused

    # Event tables: ClickHouse computes the rows.

    def _stage_computed(
        self, model: EventTable, batch: Sequence[LoggedEvent], key: str
    ) -> list[DeadLetter]:
        registry = self.app.registry
        upcasting = registry.upcasting_actions()
        letters: list[DeadLetter] = []
        events: list[LoggedEvent] = []
        for event in batch:
            if not model.handles_action(event.action):
                continue
            try:
                events.append(upcast_state(registry, event) if event.action in upcasting else event)
            except Exception as error:
                letters.append(self._letter(key, event, error))

        def insert(indexes: Sequence[int]) -> None:
            self._insert_events(model, [events[index] for index in indexes])

        refused = self._stage_all(len(events), insert)
        if refused and len(refused) == len(events):
            self._check_refusal_is_about_data(
                model, batch[0].position, next(iter(refused.values()))
            )
        elif events:
            self._accepted = next(e for i, e in enumerate(events) if i not in refused)
        return letters + [self._letter(key, events[i], error) for i, error in refused.items()]

    def _insert_events(self, model: EventTable, events: Sequence[LoggedEvent]) -> None:
        insert_select(
            self.client,
            self.target,
            self.staging,
            model.table.column_names,
            model.select_sql("{source}"),
            source_rows(events),
            SOURCE_STRUCTURE,
            SOURCE_SETTINGS,
        )

    def _check_refusal_is_about_data(self, model: EventTable, before: int, error: str) -> None:
        """Every event of a batch was refused: park them only if an event known to go through
        still does (the last one accepted, or else those just before the batch). Otherwise
        the read model itself (its SQL) or ClickHouse is at fault, and nothing is parked."""
        references = [self._accepted] if self._accepted else []
        if not references:
            earlier = self.log.after(max(0, before - 1 - _REFERENCES), _REFERENCES)
            references = [
                e for e in earlier if e.position < before and model.handles_action(e.action)
            ]
        self.client.command(f"TRUNCATE TABLE `{self.staging}`")
        passes = (
            bool(references) and _refusal(lambda: self._insert_events(model, references)) is None
        )
        self.client.command(f"TRUNCATE TABLE `{self.staging}`")
        if not passes:
            raise RefusedByReadModelError(
                f"the read model {self.model.name} refuses every event of the batch after "
                f"position {before - 1}, and no event known to be good goes through either: "
                f"its SQL or ClickHouse is at fault, not the events ({error})"
            )

    # State tables: the fold computes the rows.

    def _stage_folded(
        self, model: StateTable, batch: Sequence[LoggedEvent], key: str, from_scratch: bool
    ) -> list[DeadLetter]:
        registry = self.app.registry
        letters: list[DeadLetter] = []
        records: list[EventRecord] = []
        logged: dict[int, LoggedEvent] = {}
        for event in batch:
            if not model.handles_action(event.action):
                continue
            try:
                records.append(decode_logged(registry, event))
            except Exception as error:
                letters.append(self._letter(key, event, error))
                continue
            logged[event.position] = event
        if not records:
            return letters
        previous: dict[UUID, Row] = {}
        if not from_scratch:
            previous = self._current_rows(model, {record.stream_id for record in records})
        failed: dict[int, str] = {}
        rows = model.rows_for(records, previous, failed)
        letters += [self._letter(key, logged[p], error) for p, error in failed.items()]
        lines = [orjson.dumps(row) for row in rows]

        structure = ", ".join(f"`{c.name}` {c.type}" for c in model.table.columns)

        def insert(indexes: Sequence[int]) -> None:
            insert_select(
                self.client,
                self.target,
                self.staging,
                model.table.column_names,
                "SELECT * FROM {source}",
                b"\n".join(lines[index] for index in indexes),
                structure,
                _FOLDED_SETTINGS,
            )

        # A refused row stands for its stream's events in this batch: each is parked.
        for index, refusal in self._stage_all(len(rows), insert).items():
            stream = rows[index][model.key_column]
            letters += [
                self._letter(key, logged[record.position], refusal)
                for record in records
                if record.stream_id == stream and record.position not in failed
            ]
        return letters

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
