"""Blue/green rebuilds: a read model's next version is built beside the live one from the
start of the log, catches up with the live one, and is swapped in atomically.

Readers always query the live name; ``EXCHANGE TABLES`` swaps the two tables in one step, so a
reader sees the old version or the new one, never an empty, partial or mixed table. Positions
and dead letters belong to a table's data (its UUID), not its name, so they move with it in
that same step. An interrupted rebuild leaves the live table untouched; running it again
resumes the next version from its own position (or starts it over if the definition changed
meanwhile). The swap, a partial rebuild and a retry write the live table only where this
process alone writes it (``guard``: ``ProjectionRunner.exclusive``): a follower in this
process is held between batches; when a follower in another process holds the read model's
lock, they are refused (a batch it wrote in the instant of the swap could land in the other
table), and the rebuild stopped there resumes once that follower is stopped.

On a cluster every statement carries ``ON CLUSTER`` (``auditcore.clickhouse.ddl``): each
replica creates ``NAME__next`` (a ZooKeeper path of its own, by its UUID), swaps and drops
(``SYNC``) as the others do.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import orjson
from clickhouse_connect.driver.client import Client

from auditcore.clickhouse.connection import ClickHouseTarget
from auditcore.clickhouse.ddl import BOOKKEEPING, PROBE_SUFFIX, Ddl, create_missing
from auditcore.errors import InvalidQueryError
from auditcore.projection import deadletters, tracking
from auditcore.projection.deadletters import DeadLetter, LetterStatus
from auditcore.projection.log import LoggedEvent, LogReader
from auditcore.projection.processor import Processor
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

    ``guard`` is held from the final catch-up to the swap: pass
    ``ProjectionRunner.exclusive(name)``, so that no follower writes the live table then.
    """
    live, building, ddl = model.table_name, model.table_name + NEXT_SUFFIX, target.ddl
    create_missing(client, ddl, BOOKKEEPING)
    previous = tracking.tracked_tables(client, [building]).get(building)
    if previous is not None and previous.fingerprint != model.fingerprint():
        # A half-built version of an older definition: start over.
        _drop(client, ddl, building)
    create_missing(client, ddl, {live: model.table, building: model.table})

    processor = Processor(model, app, target, batch_size=batch_size, client=client, table=building)
    resumed_from = processor.resume()
    events = processor.catch_up(progress)
    with guard or nullcontext():
        # Catch up with the live version too: it may have moved on while this one was built.
        live_position = tracking.tracked_tables(client, [live]).get(live)
        while live_position is not None and processor.position < live_position.position:
            if not (count := processor.step()):
                break
            events += count
        client.command(ddl.exchange(live, building))
    kept = None
    if keep_old:
        kept = f"{live}__old_{datetime.now(UTC):%Y%m%d%H%M%S}"
        for statement in ddl.rename(building, kept):
            client.command(statement)
        client.command(ddl.drop_probe(building + PROBE_SUFFIX))
    else:
        _drop(client, ddl, building)
    return RebuildResult(model.name, events, processor.position, resumed_from, kept)


def _drop(client: Client, ddl: Ddl, table: str) -> None:
    """Drop a table with its probe table, tracking and dead letters."""
    key = tracking.table_key(client, table)
    if key is not None:
        tracking.forget(client, ddl, key)
        deadletters.forget(client, ddl, key)
    for statement in ddl.drop(table):
        client.command(statement)
    client.command(ddl.drop_probe(table + PROBE_SUFFIX))


def rebuild_part(
    model: ReadModel,
    app: AuditApplication,
    target: ClickHouseTarget,
    client: Client,
    *,
    stream_id: UUID | None = None,
    workspace_id: str | None = None,
    guard: AbstractContextManager[object] | None = None,
) -> int:
    """Re-project one stream or one workspace: replace just its rows, from the store.

    Only events the read model has already reached are re-projected (later ones are the
    processor's to add). Roll-ups mix streams in their rows, so they are rebuilt whole.
    The new rows are checked before the old ones are deleted; events still refused are parked.
    Returns how many events were re-projected (refused ones included).
    """
    if (stream_id is None) == (workspace_id is None):
        raise InvalidQueryError("stream_id", "give exactly one of a stream id or a workspace id")
    _refuse_roll_up(model)
    with guard or nullcontext():
        return len(_reproject(model, app, target, client, stream_id, workspace_id)[0])


def _refuse_roll_up(model: ReadModel) -> None:
    if isinstance(model, EventTable) and model.group_by:
        raise InvalidQueryError(
            "read_model",
            f"{model.name} is a roll-up, whose rows mix many streams: rebuild it whole with "
            f"`auditcore projections rebuild {model.name}`",
        )


def _reproject(
    model: ReadModel,
    app: AuditApplication,
    target: ClickHouseTarget,
    client: Client,
    stream_id: UUID | None,
    workspace_id: str | None,
) -> tuple[list[LoggedEvent], list[DeadLetter]]:
    live = model.table_name
    key = tracking.table_key(client, live) or ""
    tracked = tracking.read_tracking(client, [key]).get(key)
    reached = tracked.position if tracked else 0
    log = LogReader(app)
    parameters: dict[str, Any]
    if stream_id is not None:
        events = [e for e in log.stream(stream_id) if e.position <= reached]
        column = model.key_column if isinstance(model, StateTable) else "stream_id"
        condition, parameters = f"`{column}` = {{key:UUID}}", {"key": stream_id}
    else:
        assert workspace_id is not None
        events = list(_workspace_events(log, workspace_id, reached))
        condition, parameters = "workspace_id = {key:String}", {"key": workspace_id}
    processor = Processor(model, app, target, client=client)
    rows, refused = processor.probe(processor.rows(events, key=key, from_scratch=True), key=key)
    # Rows of a batch a follower is writing right now (after ``reached``) are left alone.
    client.command(
        target.ddl.delete(live, f"{condition} AND position <= {{reached:UInt64}}"),
        parameters={**parameters, "reached": reached},
    )
    processor.write(rows, key=key)
    deadletters.park(client, refused)
    return events, refused


def retry(
    model: ReadModel,
    app: AuditApplication,
    target: ClickHouseTarget,
    client: Client,
    letters: Sequence[DeadLetter],
    *,
    guard: AbstractContextManager[object] | None = None,
) -> list[DeadLetter]:
    """Project parked events again; return the letters still refused (the others are marked
    retried). Each letter's stream is re-projected whole (state tables fold it from its
    start); a roll-up, whose rows mix streams, is rebuilt whole."""
    if isinstance(model, EventTable) and model.group_by:
        return _retry_by_rebuilding(model, app, target, client, letters, guard)
    by_stream: dict[str, list[DeadLetter]] = defaultdict(list)
    for letter in letters:
        by_stream[letter.stream_id].append(letter)
    still: list[DeadLetter] = []
    for stream, waiting in by_stream.items():
        with guard or nullcontext():
            _, refused = _reproject(model, app, target, client, UUID(stream), None)
        failed = {letter.position for letter in refused}
        wanted = {letter.position for letter in waiting}
        still += [letter for letter in refused if letter.position in wanted]
        deadletters.resolve(
            client, [w for w in waiting if w.position not in failed], LetterStatus.RETRIED
        )
    return still


def _retry_by_rebuilding(
    model: ReadModel,
    app: AuditApplication,
    target: ClickHouseTarget,
    client: Client,
    letters: Sequence[DeadLetter],
    guard: AbstractContextManager[object] | None,
) -> list[DeadLetter]:
    """Rebuild the whole read model: the new table parks, under its own key, what it still
    cannot hold; the other letters move to it, marked retried (the old table's are gone)."""
    rebuild(model, app, target, client, guard=guard)
    key = tracking.table_key(client, model.table_name) or ""
    still = deadletters.letters(client, [key], positions=[x.position for x in letters])
    refused = {letter.position for letter in still}
    deadletters.park(
        client,
        [
            replace(letter, table_key=key, status=LetterStatus.RETRIED)
            for letter in letters
            if letter.position not in refused
        ],
    )
    return still


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
