"""Blue/green rebuilds: same rows as built incrementally, swapped in without readers noticing."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

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


def test_a_rebuilt_table_equals_the_incrementally_built_one(projected: AuditCore) -> None:
    audit = projected
    for model in audit.read_models:
        before = checksum(audit, model)
        result = audit.rebuild(model.name)
        assert result.events == audit.app.recorder.max_notification_id()
        assert checksum(audit, model) == before, model.name
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
