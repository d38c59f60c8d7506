"""Blue/green rebuilds: same rows as built incrementally, swapped in without readers noticing."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from auditcore import AuditCore, Settings
from auditcore.clickhouse.connection import connect
from auditcore.errors import DefinitionChangedError
from auditcore.projection.processor import Processor
from auditcore.projection.rebuild import rebuild
from auditcore.projection.runner import ProjectionRunner
from auditcore.readmodel.model import EventTable, ReadModel, StateTable
from auditcore.readmodel.registry import ReadModelRegistry
from tests.dataset import build, registry_with_notes


def checksum(audit: AuditCore, model: ReadModel, table: str | None = None) -> tuple[int, int]:
    """(rows, order-independent hash of every column), merged as a reader would see them."""
    table = table or model.table_name
    if isinstance(model, EventTable) and model.group_by:
        keys = ", ".join(model.group_by)
        source = f"(SELECT {keys}, sum(events) AS events FROM `{table}` GROUP BY {keys})"
    elif isinstance(model, StateTable):
        source = f"(SELECT * FROM `{table}` FINAL)"
    else:
        source = f"`{table}`"
    row = audit.clickhouse.query(f"SELECT count(), sum(cityHash64(*)) FROM {source}").result_rows
    return int(row[0][0]), int(row[0][1])


@pytest.fixture
def projected(pg_settings: Settings) -> Iterator[AuditCore]:
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        build(audit, streams=40, notes=60)
        audit.projections.batch_size = 37  # many small incremental inserts
        audit.project()
        yield audit


def merged(audit: AuditCore, table: str) -> tuple[int, int]:
    """(rows, hash of every column of every row) once ClickHouse has merged all it will."""
    audit.clickhouse.command(f"OPTIMIZE TABLE `{table}` FINAL")
    row = audit.clickhouse.query(f"SELECT count(), sum(cityHash64(*)) FROM `{table}`")
    return int(row.result_rows[0][0]), int(row.result_rows[0][1])


def test_a_rebuilt_table_equals_the_incrementally_built_one(projected: AuditCore) -> None:
    """Built in batches of 37 beside built in one batch, every row of every read model after
    OPTIMIZE FINAL (a roll-up's rows then merge: their ``position`` must be a max), with
    times from 1900 on (the far end of the range: test_time_range)."""
    audit = projected
    audit.record_many(
        {
            "action": "note.added",
            "workspace_id": "acme",
            "occurred_at": datetime(1900 + year, 6, 1, tzinfo=UTC),
        }
        for year in range(0, 126, 3)
    )
    # One roll-up key over several batches: its rows merge.
    audit.record_many(
        {
            "action": "note.added",
            "workspace_id": "acme",
            "occurred_at": datetime(1999, 12, 31, 23, minute, tzinfo=UTC),
        }
        for minute in range(60)
    )
    audit.project()
    for model in audit.read_models:
        before = merged(audit, model.table_name)
        result = audit.rebuild(model.name, keep_old=True)
        assert result.events == audit.app.recorder.max_notification_id()
        assert result.kept_old_as is not None
        assert merged(audit, model.table_name) == before, model.name
        assert merged(audit, result.kept_old_as) == before, model.name
    assert audit.project() == dict.fromkeys([m.name for m in audit.read_models], 0)


def test_readers_never_see_an_empty_or_partial_table_during_rebuild_and_swap(
    projected: AuditCore,
) -> None:
    audit = projected
    model = audit.read_models.get("audit_events")
    expected = checksum(audit, model)[0]
    counts: list[int] = []
    failures: list[BaseException] = []
    done = threading.Event()

    def read_continuously() -> None:
        with connect(audit.settings.clickhouse_target) as client:
            while not done.is_set():
                try:
                    counts.append(
                        int(client.query("SELECT count() FROM audit_events").result_rows[0][0])
                    )
                except BaseException as error:
                    failures.append(error)

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        rebuild(model, audit.app, audit.settings.clickhouse_target, audit.clickhouse, batch_size=25)
    finally:
        done.set()
        reader.join()
    assert failures == []
    assert len(counts) > 10
    assert set(counts) == {expected}


def test_an_interrupted_rebuild_leaves_the_live_table_and_resumes(projected: AuditCore) -> None:
    audit = projected
    model = audit.read_models.get("audit_events")
    before = checksum(audit, model)
    batches = 0

    def interrupt_after_three(_: int) -> None:
        nonlocal batches
        batches += 1
        if batches == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rebuild(
            model,
            audit.app,
            audit.settings.clickhouse_target,
            audit.clickhouse,
            batch_size=50,
            progress=interrupt_after_three,
        )
    assert checksum(audit, model) == before
    assert checksum(audit, model, "audit_events__next")[0] == 150

    result = rebuild(
        model, audit.app, audit.settings.clickhouse_target, audit.clickhouse, batch_size=50
    )
    assert result.resumed_from == 150
    assert checksum(audit, model) == before
    tables = {row[0] for row in audit.clickhouse.query("SHOW TABLES").result_rows}
    assert "audit_events__next" not in tables


def test_a_changed_definition_is_refused_until_rebuilt(projected: AuditCore) -> None:
    audit = projected
    old = audit.read_models.get("incidents")
    changed = dataclasses.replace(old, version=old.version + 1)
    runner = ProjectionRunner(
        audit.app, audit.settings.clickhouse_target, ReadModelRegistry([changed])
    )
    (status,) = runner.status(audit.clickhouse)
    assert not status.fingerprint_matches
    audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "later"})
    with pytest.raises(DefinitionChangedError, match="projections rebuild incidents"):
        Processor(
            changed, audit.app, audit.settings.clickhouse_target, client=audit.clickhouse
        ).step()

    result = rebuild(
        changed, audit.app, audit.settings.clickhouse_target, audit.clickhouse, keep_old=True
    )
    assert result.kept_old_as
    assert result.kept_old_as.startswith("incidents__old_")
    (status,) = runner.status(audit.clickhouse)
    assert status.fingerprint_matches
    assert status.lag == 0
    with pytest.raises(DefinitionChangedError):
        Processor(old, audit.app, audit.settings.clickhouse_target, client=audit.clickhouse).step()


def rows_of(audit: AuditCore, sql: str) -> int:
    return int(audit.clickhouse.query(sql).result_rows[0][0])


def test_a_partial_rebuild_replaces_only_its_stream_or_workspace(projected: AuditCore) -> None:
    audit = projected
    events = audit.read_models.get("audit_events")
    incidents = audit.read_models.get("incidents")
    before = (checksum(audit, events), checksum(audit, incidents))
    damaged, other = [
        row[0]
        for row in audit.clickhouse.query(
            "SELECT incident_id FROM incidents FINAL ORDER BY incident_id LIMIT 2"
        ).result_rows
    ]
    for stream in (damaged, other):
        audit.clickhouse.command(f"DELETE FROM audit_events WHERE stream_id = '{stream}'")
        audit.clickhouse.command(f"DELETE FROM incidents WHERE incident_id = '{stream}'")
    other_events = len(audit.history(other))

    assert audit.rebuild_part("audit_events", stream_id=damaged) == len(audit.history(damaged))
    assert audit.rebuild_part("incidents", stream_id=damaged) == len(audit.history(damaged))

    # The damaged stream is back; the other one, not asked for, is still missing.
    assert rows_of(audit, f"SELECT count() FROM audit_events WHERE stream_id = '{damaged}'") > 0
    assert rows_of(audit, f"SELECT count() FROM audit_events WHERE stream_id = '{other}'") == 0
    audit.rebuild_part("audit_events", stream_id=other)
    audit.rebuild_part("incidents", stream_id=other)
    assert rows_of(audit, f"SELECT count() FROM audit_events WHERE stream_id = '{other}'") == (
        other_events
    )
    assert (checksum(audit, events), checksum(audit, incidents)) == before

    audit.clickhouse.command("DELETE FROM audit_events WHERE workspace_id = 'globex'")
    globex = audit.rebuild_part("audit_events", workspace_id="globex")
    assert globex == rows_of(
        audit, "SELECT count() FROM audit_events WHERE workspace_id = 'globex'"
    )
    assert checksum(audit, events) == before[0]


def test_a_roll_up_is_rebuilt_whole_only(projected: AuditCore) -> None:
    from auditcore.errors import InvalidQueryError  # noqa: PLC0415

    with pytest.raises(InvalidQueryError, match="roll-up, whose rows mix many streams"):
        projected.rebuild_part("activity_hourly", workspace_id="acme")


def test_point_in_time_history_and_state_replay_what_the_store_had(pg_settings: Settings) -> None:
    from datetime import UTC, datetime  # noqa: PLC0415

    from auditcore import Incident, IncidentStatus, NotFoundError  # noqa: PLC0415

    def pause() -> datetime:
        time.sleep(0.01)
        moment = datetime.now(UTC)
        time.sleep(0.01)
        return moment

    with AuditCore(pg_settings) as audit:
        before_anything = pause()
        incident = Incident.open("acme", title="Disk", severity="sev3", service="db")
        incident.acknowledge()
        audit.save(incident)
        after_ack = pause()
        incident.change_severity("sev1")
        incident.assign("user_ana")
        audit.save(incident)
        after_escalation = pause()
        incident.resolve("cleaned up")
        audit.save(incident)

        assert [e.version for e in audit.history(incident.id, as_of=after_ack)] == [1, 2]
        assert [e.version for e in audit.history(incident.id, as_of=after_escalation)] == [
            1,
            2,
            3,
            4,
        ]
        assert len(audit.history(incident.id, as_of=datetime.now(UTC))) == 5
        then = audit.get(Incident, incident.id, as_of=after_ack)
        assert (then.status, then.severity, then.assignee_id, then.version) == (
            IncidentStatus.ACKNOWLEDGED,
            "sev3",
            None,
            2,
        )
        later = audit.get(Incident, incident.id, as_of=after_escalation)
        assert (later.status, later.severity, later.assignee_id, later.version) == (
            IncidentStatus.ACKNOWLEDGED,
            "sev1",
            "user_ana",
            4,
        )
        with pytest.raises(NotFoundError, match="had no events yet"):
            audit.history(incident.id, as_of=before_anything)


def test_a_rebuild_while_following_and_recording_loses_and_repeats_nothing(
    projected: AuditCore,
) -> None:
    audit = projected
    stop, writing_done = threading.Event(), threading.Event()
    followers = audit.projections.follow(stop)

    def keep_recording() -> None:
        for n in range(150):
            audit.record("incident.comment_added", workspace_id="acme", metadata={"body": f"{n}"})
        writing_done.set()

    writer = threading.Thread(target=keep_recording)
    writer.start()
    try:
        for _ in range(3):
            audit.rebuild("audit_events")
        writer.join()
        head = audit.app.recorder.max_notification_id()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and rows_of(
            audit, "SELECT max(position) FROM audit_events"
        ) < (head or 0):
            time.sleep(0.05)
    finally:
        stop.set()
        for follower in followers:
            follower.join(timeout=10)
    assert writing_done.is_set()
    assert rows_of(audit, "SELECT count() FROM audit_events") == head
    assert rows_of(audit, "SELECT uniqExact(event_id) FROM audit_events") == head
