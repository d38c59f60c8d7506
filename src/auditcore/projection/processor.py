"""A processor moves events from the store into one read model's ClickHouse table.

It reads the log in batches after its position, turns each batch into rows with one insert
(carrying a deduplication token, so a retried insert of the same batch is dropped), and only
then records its new position. Event tables are computed by ClickHouse from an Arrow batch of
the stored events; state tables are folded in Python from each stream's current row.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from uuid import UUID

import orjson
from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.bulk import insert_select
from auditcore.clickhouse.connection import ClickHouseTarget, connect, query_dicts
from auditcore.errors import DefinitionChangedError, StoreMismatchError
from auditcore.projection.log import LoggedEvent, LogReader
from auditcore.projection.records import decode_logged, upcast_states
from auditcore.projection.tracking import (
    TrackedPosition,
    newest_position_in,
    read_positions,
    record_position,
)
from auditcore.projection.wakeup import wakeup_for
from auditcore.readmodel.model import EventTable, ReadModel, Row, StateTable
from auditcore.store.application import AuditApplication

_KEYS_PER_LOOKUP = 5_000
# Folded rows must match the table exactly: a misnamed column is an error, not a silent skip.
_FOLDED_SETTINGS: dict[str, str | int] = {
    "date_time_input_format": "best_effort",
    "input_format_skip_unknown_fields": 0,
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
        self.app = app
        self.target = target
        self.batch_size = batch_size
        self.log = LogReader(app)
        self.position = 0
        self._client = client
        self._resumed = False
        self._first_event_id: str | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect(self.target)
        return self._client

    def resume(self) -> int:
        """Find where to continue: the recorded position or the rows' newest, whichever is later."""
        tracked = read_positions(self.client).get(self.table)
        if tracked and tracked.store_id and tracked.store_id != self.store_id():
            raise StoreMismatchError(
                f"the read model {self.table} in {self.target.describe()} was built "
                f"from another event store than {self.app.settings.describe_event_store()} "
                "(their first events differ). Give each event store its own ClickHouse "
                "database (AUDITCORE_CLICKHOUSE=chdb://PATH?database=NAME), or drop the "
                "read model's tables to rebuild them from this store."
            )
        self._check_definition(tracked)
        recorded = tracked.position if tracked else 0
        self.position = max(recorded, newest_position_in(self.client, self.table))
        self._resumed = True
        return self.position

    def _check_definition(self, tracked: TrackedPosition | None) -> None:
        declared = self.model.fingerprint()
        if tracked and tracked.fingerprint and tracked.fingerprint != declared:
            raise DefinitionChangedError(self.model.name, tracked.fingerprint, declared)

    def _follow_tracking(self) -> None:
        """Before each batch: another writer (a rebuild's swap) may have moved the table on."""
        tracked = read_positions(self.client).get(self.table)
        self._check_definition(tracked)
        if tracked and tracked.position > self.position:
            self.position = tracked.position

    def step(self) -> int:
        """Process the next batch; return how many events it read (0 when caught up)."""
        if self._resumed:
            self._follow_tracking()
        else:
            self.resume()
        batch = self.log.after(self.position, self.batch_size)
        if not batch:
            return 0
        first, last = batch[0].position, batch[-1].position
        settings: dict[str, str | int] = {
            "insert_deduplication_token": f"{self.table}:{first}-{last}"
        }
        if isinstance(self.model, EventTable):
            self._insert_computed(self.model, batch, settings)
        elif isinstance(self.model, StateTable):
            self._insert_folded(self.model, batch, settings)
        record_position(self.client, self.table, last, self.model.fingerprint(), self.store_id())
        self.position = last
        return len(batch)

    def write(self, batch: Sequence[LoggedEvent], token: str) -> None:
        """Turn a batch of stored events into rows, in one insert deduplicated by ``token``."""
        settings: dict[str, str | int] = {"insert_deduplication_token": token}
        if isinstance(self.model, EventTable):
            self._insert_computed(self.model, batch, settings)
        elif isinstance(self.model, StateTable):
            self._insert_folded(self.model, batch, settings)

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

    def _insert_computed(
        self, model: EventTable, batch: Sequence[LoggedEvent], settings: dict[str, str | int]
    ) -> None:
        insert_select(
            self.client,
            self.target,
            self.table,
            model.table.column_names,
            model.select_sql("{source}"),
            upcast_states(self.app.registry, list(batch)),
            settings,
        )

    def _insert_folded(
        self, model: StateTable, batch: Sequence[LoggedEvent], settings: dict[str, str | int]
    ) -> None:
        registry = self.app.registry
        records = [decode_logged(registry, e) for e in batch if model.handles_action(e.action)]
        if not records:
            return
        keys = model.previous_keys(records)
        rows = model.rows_for(records, self._current_rows(model, keys) if keys else {})
        # JSONEachRow: one C-speed serialisation here, parsed by ClickHouse in C++.
        body = b"\n".join(orjson.dumps(row) for row in rows)
        self.client.raw_insert(
            self.table,
            model.table.column_names,
            insert_block=body,
            fmt="JSONEachRow",
            settings={**_FOLDED_SETTINGS, **settings},
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
