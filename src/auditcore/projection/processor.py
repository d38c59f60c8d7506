"""A processor moves events from the store into one read model's ClickHouse table.

It reads the log in batches after its position, turns each batch into rows, inserts them in
one insert (with a deduplication token, so a retried insert of the same batch is dropped),
and only then records its new position.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from clickhouse_connect.driver.client import Client
from eventsourcing.persistence import Notification

from auditcore.clickhouse.connection import ClickHouseTarget, connect, query_dicts
from auditcore.errors import StoreMismatchError
from auditcore.projection.records import decode_notification
from auditcore.projection.tracking import newest_position_in, read_positions, record_position
from auditcore.projection.wakeup import wakeup_for
from auditcore.readmodel.model import ReadModel, Row
from auditcore.store.application import AuditApplication

_KEYS_PER_LOOKUP = 5_000


@dataclass
class ProcessorState:
    """What a processor has done, for status and for the runner's error handling."""

    name: str
    table: str
    position: int = 0
    events_processed: int = 0
    rows_written: int = 0
    batches: int = 0
    last_error: str | None = None
    errors: int = 0
    updated_at: datetime | None = None
    started_at: float = field(default_factory=time.monotonic)


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
    ) -> None:
        self.model = model
        self.app = app
        self.target = target
        self.batch_size = batch_size
        self._client = client
        self.state = ProcessorState(model.name, model.table_name)
        self._resumed = False
        self._first_event_id: str | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = connect(self.target)
        return self._client

    def resume(self) -> int:
        """Find where to continue: the recorded position or the rows' newest, whichever is later."""
        tracked = read_positions(self.client).get(self.model.table_name)
        if tracked and tracked.store_id and tracked.store_id != self._store_id():
            raise StoreMismatchError(
                f"the read model {self.model.table_name} in {self.target.describe()} was built "
                f"from another event store than {self.app.settings.describe_event_store()} "
                "(their first events differ). Give each event store its own ClickHouse "
                "database (AUDITCORE_CLICKHOUSE=chdb://PATH?database=NAME), or drop the "
                "read model's tables to rebuild them from this store."
            )
        recorded = tracked.position if tracked else 0
        self.state.position = max(recorded, newest_position_in(self.client, self.model.table_name))
        self._resumed = True
        return self.state.position

    def _store_id(self) -> str:
        """The event id of the store's first event, or "" while the store is empty."""
        if self._first_event_id is None:
            first = self.app.recorder.select_notifications(start=None, limit=1)
            self._first_event_id = str(json.loads(first[0].state)["event_id"]) if first else ""
        return self._first_event_id

    def step(self) -> int:
        """Process the next batch; return how many events it read (0 when caught up)."""
        if not self._resumed:
            self.resume()
        notifications = self.app.recorder.select_notifications(
            start=self.state.position, limit=self.batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0
        rows = self._rows(notifications)
        first, last = notifications[0].id, notifications[-1].id
        if rows:
            self._insert(rows, token=f"{self.model.table_name}:{first}-{last}")
        record_position(
            self.client, self.model.table_name, last, self.model.fingerprint(), self._store_id()
        )
        self.state.position = last
        self.state.events_processed += len(notifications)
        self.state.rows_written += len(rows)
        self.state.batches += 1
        self.state.updated_at = datetime.now(UTC)
        return len(notifications)

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
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        """Catch up, then keep following new events until ``stop`` is set."""
        wakeup = wakeup_for(self.app, stop, poll)
        try:
            while not stop.is_set():
                if count := self.step():
                    if on_batch:
                        on_batch(count)
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

    def _rows(self, notifications: Sequence[Notification]) -> list[Row]:
        registry = self.app.registry
        records = [
            decode_notification(registry, notification)
            for notification in notifications
            if self.model.handles_action(notification.topic)
        ]
        if not records:
            return []
        keys = self.model.previous_keys(records)
        previous = self._current_rows(keys) if keys else {}
        return self.model.rows_for(records, previous)

    def _current_rows(self, keys: set[UUID]) -> dict[UUID, Row]:
        key_column = getattr(self.model, "key_column", "stream_id")
        found: dict[UUID, Row] = {}
        ordered = sorted(keys)
        for start in range(0, len(ordered), _KEYS_PER_LOOKUP):
            rows = query_dicts(
                self.client,
                f"SELECT * FROM `{self.model.table_name}` FINAL "
                f"WHERE `{key_column}` IN {{keys:Array(UUID)}}",
                {"keys": ordered[start : start + _KEYS_PER_LOOKUP]},
            )
            found.update({row[key_column]: row for row in rows})
        return found

    def _insert(self, rows: list[Row], token: str) -> None:
        columns = self.model.table.column_names
        data: list[list[Any]] = [[row[name] for name in columns] for row in rows]
        self.client.insert(
            self.model.table_name,
            data,
            column_names=columns,
            settings={"insert_deduplication_token": token},
        )
