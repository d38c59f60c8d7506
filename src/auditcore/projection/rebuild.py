"""Blue/green rebuilds: a read model's next version is built beside the live one from the
start of the log, catches up with the live one, and is swapped in atomically.

Readers always query the live name; ``EXCHANGE TABLES`` swaps the two tables in one step, so a
reader sees the old version or the new one, never an empty, partial or mixed table. An
interrupted rebuild leaves the live table untouched; running it again resumes the next version
from its own position (or starts it over if the definition changed meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

import orjson
from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.connection import ClickHouseTarget
from auditcore.clickhouse.ddl import create_table_sql, tracking_table_sql
from auditcore.errors import InvalidQueryError
from auditcore.projection.log import LoggedEvent, LogReader
from auditcore.projection.processor import Processor
from auditcore.projection.tracking import forget_position, read_positions, record_position
from auditcore.readmodel.model import EventTable, ReadModel, StateTable
from auditcore.store.application import AuditApplication

NEXT_SUFFIX = "__next"


@dataclass(frozen=True)
class RebuildResult:
    name: str
    events: int
    position: int
    resumed_from: int
    kept_old_as: str | None


def rebuild(
    model: ReadModel,
    app: AuditApplication,
    target: ClickHouseTarget,
    client: Client,
    *,
    keep_old: bool = False,
    batch_size: int = 20_000,
    progress: Callable[[int], None] | None = None,
    guard: AbstractContextManager[object] | None = None,
) -> RebuildResult:
    """Build ``model`` anew beside its live table and swap it in (see the module's notes).

    ``guard`` is held from the final catch-up to the swap: pass the lock this process's
    follower of the read model holds per batch (``ProjectionRunner.guard``).
    """
    live, building = model.table_name, model.table_name + NEXT_SUFFIX
    fingerprint = model.fingerprint()
    client.command(tracking_table_sql(target.cluster))
    tracked = read_positions(client)
    previous = tracked.get(building)
    if previous is not None and previous.fingerprint != fingerprint:
        # A half-built version of an older definition: start over.
        client.command(f"DROP TABLE IF EXISTS `{building}`")
        forget_position(client, building)
        previous = None
    client.command(create_table_sql(live, model.table, target.cluster))
    client.command(create_table_sql(building, model.table, target.cluster))

    processor = Processor(model, app, target, batch_size=batch_size, client=client, table=building)
    resumed_from = processor.resume()
    events = processor.catch_up(progress)
    with guard or nullcontext():
        # Catch up with the live version too: it may have moved on while this one was built.
        live_position = read_positions(client).get(live)
        while live_position is not None and processor.position < live_position.position:
            if not (count := processor.step()):
                break
            events += count
        client.command(f"EXCHANGE TABLES `{live}` AND `{building}`")
        record_position(client, live, processor.position, fingerprint, processor.store_id())
    forget_position(client, building)
    kept = None
    if keep_old:
        kept = f"{live}__old_{datetime.now(UTC):%Y%m%d%H%M%S}"
        client.command(f"RENAME TABLE `{building}` TO `{kept}`")
    else:
        client.command(f"DROP TABLE `{building}`")
    return RebuildResult(model.name, events, processor.position, resumed_from, kept)


def rebuild_part(
    model: ReadModel,
    app: AuditApplication,
    target: ClickHouseTarget,
    client: Client,
    *,
    stream_id: UUID | None = None,
    workspace_id: str | None = None,
) -> int:
    """Re-project one stream or one workspace: replace just its rows, from the store.

    Only events the read model has already reached are re-projected (later ones are the
    processor's to add). Roll-ups mix streams in their rows, so they are rebuilt whole.
    Returns how many events were re-projected.
    """
    if (stream_id is None) == (workspace_id is None):
        raise InvalidQueryError("stream_id", "give exactly one of a stream id or a workspace id")
    if isinstance(model, EventTable) and model.group_by:
        raise InvalidQueryError(
            "read_model",
            f"{model.name} is a roll-up, whose rows mix many streams: rebuild it whole with "
            f"`auditcore projections rebuild {model.name}`",
        )
    tracked = read_positions(client).get(model.table_name)
    reached = tracked.position if tracked else 0
    log = LogReader(app)
    parameters: dict[str, UUID | str]
    if stream_id is not None:
        events = [e for e in log.stream(stream_id) if e.position <= reached]
        key = model.key_column if isinstance(model, StateTable) else "stream_id"
        condition, parameters = f"`{key}` = {{key:UUID}}", {"key": stream_id}
    else:
        assert workspace_id is not None
        events = list(_workspace_events(log, workspace_id, reached))
        condition, parameters = "workspace_id = {key:String}", {"key": workspace_id}
    client.command(f"DELETE FROM `{model.table_name}` WHERE {condition}", parameters=parameters)
    if events:
        processor = Processor(model, app, target, client=client)
        processor.write(events, token=f"{model.table_name}:part:{uuid4()}")
    return len(events)


def _workspace_events(log: LogReader, workspace_id: str, reached: int) -> Iterator[LoggedEvent]:
    needle = orjson.dumps({"workspace_id": workspace_id})[1:-1]
    position = 0
    while batch := log.after(position, 20_000):
        for event in batch:
            if event.position > reached:
                return
            # A cheap byte search first; the decode confirms it is the envelope's own field.
            if needle in event.state and orjson.loads(event.state)["workspace_id"] == workspace_id:
                yield event
        position = batch[-1].position
