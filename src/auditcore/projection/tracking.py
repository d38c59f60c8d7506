"""Each processor's position, kept in ClickHouse beside the rows it wrote.

The position is recorded after the rows; on restart a processor resumes from the larger of
its recorded position and the newest position found in its own rows (a batch insert is
atomic), so a crash between the two writes neither repeats nor skips a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.connection import as_utc
from auditcore.clickhouse.ddl import TRACKING_TABLE


@dataclass(frozen=True)
class TrackedPosition:
    processor: str
    position: int
    fingerprint: str
    store_id: str
    """The event id of the store's first event: which event store these rows came from."""
    updated_at: datetime | None


def read_positions(client: Client) -> dict[str, TrackedPosition]:
    result = client.query(
        f"SELECT processor, argMax(position, updated_at), argMax(fingerprint, updated_at), "
        f"argMax(store_id, updated_at), max(updated_at) FROM `{TRACKING_TABLE}` "
        "GROUP BY processor"
    )
    return {
        row[0]: TrackedPosition(row[0], int(row[1]), row[2], row[3], as_utc(row[4]))
        for row in result.result_rows
    }


def record_position(
    client: Client, processor: str, position: int, fingerprint: str, store_id: str
) -> None:
    client.insert(
        TRACKING_TABLE,
        [[processor, position, fingerprint, store_id, datetime.now(UTC)]],
        column_names=["processor", "position", "fingerprint", "store_id", "updated_at"],
    )


def newest_position_in(client: Client, table: str) -> int:
    return int(client.query(f"SELECT max(position) FROM `{table}`").result_rows[0][0] or 0)


def forget_position(client: Client, processor: str) -> None:
    client.command(
        f"DELETE FROM `{TRACKING_TABLE}` WHERE processor = {{processor:String}}",
        parameters={"processor": processor},
    )
