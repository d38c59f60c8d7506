"""Each processor's position and intent, kept in ClickHouse beside the rows it writes.

What makes a read model equal the store's log, whatever instant a processor is killed at:

- **Positions describe a table's data, not its name.** A tracking row is keyed by the table's
  UUID (``system.tables.uuid``; the name where a database has none), so ``EXCHANGE TABLES``
  (a blue/green rebuild's swap) carries each table's position with its rows, in one step.
- **An intent is recorded before a batch is written.** A batch is the events in
  ``(position, intent]`` of the store's log (commit order; the range, not the batch size,
  identifies it). It is written in one ``INSERT`` whose rows form one block (no parallel
  insert streams, no squashing threshold), so every row is computed, and any refusal raised,
  before the first part is written; ClickHouse then writes one part per partition, each
  committed whole, the parts one after another. A kill can leave some partitions of a batch
  written and others not, never part of a partition's rows.
- **The position is recorded after the insert.** Rows are only ever written inside a
  recorded intent, so every row's ``position`` column (the newest event it reflects: the
  event's own for event tables, ``max`` for roll-ups, the last folded event's for state
  tables) is at most the recorded position, or inside the unfinished intent.
- **A restart finishes an unfinished intent exactly.** It reads the same range again,
  computes the same rows (events parked meanwhile left out), and inserts them but for the
  partitions already holding a row with a position inside the range: those parts committed.
  Then it records the position. State tables are idempotent besides: a fold skips events
  whose version the stream's row already holds. On a cluster of several shards a batch is
  split by shard, each shard committing its own parts, so a "partition" here is a partition
  and a workspace (the sharding key): its rows are on one shard, in one part.
- **A dead writer's insert is over before the table is asked.** On a server, an insert sent
  by a process that was then killed runs on to its end. A batch's inserts run under a query
  id made from its intent; a redo first waits until no query runs under that id (a server
  refuses a second query with a running query's id; on a cluster every replica's process
  list is asked too) and runs its own insert under the same id, so the two never overlap.
- **On a cluster, a processor first syncs its replicas** (``SYSTEM SYNC REPLICA`` of its
  table, the tracking and the dead letters), so it judges an unfinished batch against every
  part another replica committed (a node that is down holding parts no other has makes it
  wait, and fail, rather than guess).

Neither ClickHouse's insert deduplication (``insert_deduplication_token``) nor multi-part
atomicity is used: correctness would then depend on the deduplication window and on its log
agreeing with the parts after a crash; here the table itself is asked.

Each processor assumes it is its table's only writer: ``auditcore.projection.coordination``
makes it so (one process per read model holds its lock; the others stand by). What is not
covered: a lock lost in mid-batch (``auditcore.store.locks``), and a dead writer's insert
still in transit to the server when the redo has waited for it (the redo comes at least the
standby's poll, two seconds, after the death).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.connection import as_utc
from auditcore.clickhouse.ddl import LOCAL_SUFFIX, TRACKING_TABLE, Ddl

_NO_UUID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class TrackedPosition:
    table_key: str
    """The table's UUID (its name where the database gives tables none)."""
    processor: str
    """The table's name when this row was written (for people: the key is what counts)."""
    seq: int
    position: int
    """Every event up to here is in the table (or parked as a dead letter)."""
    intent: int
    """0, or the end of the batch being written: events in (position, intent]."""
    fingerprint: str
    store_id: str
    """The event id of the store's first event: which event store these rows came from."""
    updated_at: datetime | None

    @property
    def unfinished(self) -> bool:
        return self.intent > self.position

    def next(self, *, position: int, intent: int = 0) -> TrackedPosition:
        return replace(self, seq=self.seq + 1, position=position, intent=intent)


def table_keys(client: Client, names: list[str]) -> dict[str, str]:
    """Each existing table's key (its UUID, or its name), by name. On a sharded cluster the
    key is the local table's (``name`` + ``LOCAL_SUFFIX``, which holds the rows and is what
    a rebuild's swap exchanges), for a table whose ``Distributed`` table exists."""
    rows = client.query(
        "SELECT name, toString(uuid) FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
        parameters={"names": [*names, *(name + LOCAL_SUFFIX for name in names)]},
    ).result_rows
    found = {name: (name if uuid == _NO_UUID else uuid) for name, uuid in rows}
    return {name: found.get(name + LOCAL_SUFFIX, found[name]) for name in names if name in found}


def table_key(client: Client, name: str) -> str | None:
    return table_keys(client, [name]).get(name)


def read_tracking(client: Client, keys: list[str]) -> dict[str, TrackedPosition]:
    """The newest tracking row of each table key given."""
    if not keys:
        return {}
    result = client.query(
        "SELECT table_key, argMax(processor, seq), max(seq), argMax(position, seq), "
        "argMax(intent, seq), argMax(fingerprint, seq), argMax(store_id, seq), "
        f"argMax(updated_at, seq) FROM `{TRACKING_TABLE}` "
        "WHERE table_key IN {keys:Array(String)} GROUP BY table_key",
        parameters={"keys": keys},
    )
    return {
        row[0]: TrackedPosition(
            row[0], row[1], int(row[2]), int(row[3]), int(row[4]), row[5], row[6], as_utc(row[7])
        )
        for row in result.result_rows
    }


def tracked_tables(client: Client, names: list[str]) -> dict[str, TrackedPosition]:
    """The tracking of each named table that exists and has been written to, by name."""
    keys = table_keys(client, names)
    tracked = read_tracking(client, list(keys.values()))
    return {name: tracked[key] for name, key in keys.items() if key in tracked}


def record(client: Client, tracked: TrackedPosition) -> TrackedPosition:
    """Write a tracking row (one row: one part, committed whole)."""
    written = replace(tracked, updated_at=datetime.now(UTC))
    client.insert(
        TRACKING_TABLE,
        [
            [
                written.table_key,
                written.processor,
                written.seq,
                written.position,
                written.intent,
                written.fingerprint,
                written.store_id,
                written.updated_at,
            ]
        ],
        column_names=[
            "table_key",
            "processor",
            "seq",
            "position",
            "intent",
            "fingerprint",
            "store_id",
            "updated_at",
        ],
    )
    return written


def forget(client: Client, ddl: Ddl, key: str) -> None:
    """Drop a table's tracking (its table is gone, or starts over)."""
    client.command(
        ddl.delete(TRACKING_TABLE, "table_key = {key:String}"),
        parameters={"key": key},
    )
