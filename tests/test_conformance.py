"""The `eventsourcing` library's own conformance cases, run against auditcore's recorders.

Ordering, atomicity, conflict detection, contiguous and non-interleaving notification ids,
concurrent writers and readers, subscriptions: whatever the library promises of an
application recorder must stay true of ours, on PostgreSQL and on SQLite, so a change that
breaks the library's contract fails here.

Our recorders also write each event's id to the event-id index, so they take the stored
events of auditcore's mapper, which carry an ``event_id``. The library's cases build plain
``StoredEvent``s by name from their module; while a case runs, that name makes the same
stored event with a fresh event id (equal to a plain one with the same fields, as the cases
compare what they wrote with what they read back).

Not run, because they test what our recorders are not: ``AggregateRecorderTestCase`` (an
aggregate recorder returns no notification ids; ours, an application recorder, does),
``TrackingRecorderTestCase`` and ``ProcessRecorderTestCase`` (auditcore's followers track
their positions beside their read models, not in these recorders), and
``InfrastructureFactoryTestCase`` (auditcore configures the library's factory only from its
own settings, tested in test_settings.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresDatastore
from eventsourcing.sqlite import SQLiteDatastore
from eventsourcing.tests import persistence as library_cases
from eventsourcing.tests.persistence import (
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
)

from auditcore.store.mapper import AuditStoredEvent
from auditcore.store.recorders import PostgresAuditRecorder, SQLiteAuditRecorder

# The library's longest table name (63 bytes with its suffix) leaves no room for the index's
# "_event_ids"; the library's own suite uses it to check the names' length, not their use.
EVENTS_TABLE = "stored_events"


@dataclass(frozen=True, eq=False)
class IdentifiedStoredEvent(AuditStoredEvent):
    """A stored event as auditcore's mapper makes it: with its own event id (and a workspace)."""

    event_id: UUID = field(default_factory=uuid4)
    workspace_id: str = "acme"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredEvent):
            return NotImplemented
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(StoredEvent))

    __hash__ = None  # type: ignore[assignment]


class WithEventIds:
    """Makes the library's cases build stored events that carry event ids."""

    def setUp(self) -> None:
        patch = mock.patch.object(library_cases, "StoredEvent", IdentifiedStoredEvent)
        patch.start()
        self.addCleanup(patch.stop)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]


class OnPostgres(WithEventIds):
    """A schema of its own in this run's test database, for every case."""

    pool_size = 1
    database: str

    @pytest.fixture(autouse=True)
    def _database(self, postgres_database: str) -> None:
        self.database = postgres_database

    def setUp(self) -> None:
        super().setUp()
        self.schema = f"conformance_{uuid4().hex[:12]}"
        with psycopg.connect(self.database, autocommit=True) as admin:
            admin.execute(f'CREATE SCHEMA "{self.schema}"')
        url = urlsplit(self.database)
        self.datastore = PostgresDatastore(
            dbname=url.path.lstrip("/"),
            host=url.hostname or "127.0.0.1",
            port=url.port or 5432,
            user=url.username or "postgres",
            password=url.password or "",
            schema=self.schema,
            pool_size=self.pool_size,
            max_overflow=0,
            lock_timeout=30,
        )

    def tearDown(self) -> None:
        self.datastore.close()
        with psycopg.connect(self.database, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
        super().tearDown()  # type: ignore[misc]

    def resize_pool(self, size: int) -> None:
        self.datastore.pool.open()
        self.datastore.pool.resize(size, size)

    def create_recorder(self) -> PostgresAuditRecorder:
        recorder = PostgresAuditRecorder(self.datastore, events_table_name=EVENTS_TABLE)
        recorder.create_table()
        return recorder


class TestPostgresApplicationRecorder(OnPostgres, ApplicationRecorderTestCase[Any]):
    # As the library runs these cases on its own PostgreSQL recorder: a pool as large as
    # the case's number of threads.
    def test_insert_subscribe(self) -> None:
        self.resize_pool(2)
        self.optional_test_insert_subscribe()

    def test_concurrent_no_conflicts(self, initial_position: int = 0) -> None:  # noqa: PT028 - the library's signature
        self.resize_pool(12)
        super().test_concurrent_no_conflicts(initial_position)

    def test_concurrent_throughput(self) -> None:
        self.resize_pool(10)
        super().test_concurrent_throughput()


class TestPostgresNonInterleaving(OnPostgres, NonInterleavingNotificationIDsBaseCase):
    pool_size = 2


class BulkAppendingRecorder(PostgresAuditRecorder):
    """Our binary ``COPY`` path (``append_bulk``, used for large batches) as the insert."""

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        self.append_bulk(stored_events)
        return None


class TestPostgresBulkAppendNonInterleaving(TestPostgresNonInterleaving):
    def create_recorder(self) -> PostgresAuditRecorder:
        recorder = BulkAppendingRecorder(self.datastore, events_table_name=EVENTS_TABLE)
        recorder.create_table()
        return recorder


class OnSQLite(WithEventIds):
    """A database file of its own for every case (WAL, as auditcore's SQLite store)."""

    tmp_path: Path

    @pytest.fixture(autouse=True)
    def _tmp_path(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def create_recorder(self) -> SQLiteAuditRecorder:
        datastore = SQLiteDatastore(
            db_name=str(self.tmp_path / "events.sqlite"), pool_size=100, lock_timeout=10
        )
        recorder = SQLiteAuditRecorder(datastore, EVENTS_TABLE)
        recorder.create_table()
        return recorder


class TestSQLiteApplicationRecorder(OnSQLite, ApplicationRecorderTestCase[Any]):
    pass


class TestSQLiteNonInterleaving(OnSQLite, NonInterleavingNotificationIDsBaseCase):
    pass
