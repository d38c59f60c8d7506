"""No poison batch: events the read side cannot hold are isolated and parked, everything else
keeps flowing, and each read model runs on whatever the others do."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

from auditcore import AuditCore, Settings
from auditcore.errors import CatchUpFailedError
from auditcore.projection.deadletters import LetterStatus
from auditcore.projection.records import EventRecord
from auditcore.projection.runner import ProjectionRunner
from auditcore.readmodel.model import Column, Row, StateTable, Table
from auditcore.readmodel.queries import EventQuery
from auditcore.readmodel.registry import ReadModelRegistry
from tests.poison import mend, store_unprojectable
from tests.test_projection import BROKEN

EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)


def decades_of(workspace: str, count: int, seed: int = 5) -> list[dict[str, Any]]:
    """``count`` events from 1900 to now: one batch spans centuries of partitions."""
    rng = random.Random(seed)
    span = (datetime.now(UTC) - EARLIEST).total_seconds()
    return [
        {
            "action": "incident.comment_added",
            "workspace_id": workspace,
            "metadata": {"body": f"backfilled {n}"},
            "occurred_at": EARLIEST + timedelta(seconds=rng.uniform(0, span)),
        }
        for n in range(count)
    ]


def test_a_refused_event_is_parked_and_everything_else_flows(pg_settings: Settings) -> None:
    with AuditCore(pg_settings) as audit:
        audit.record_many(decades_of("acme", 300))
        poison = store_unprojectable(audit, "acme")
        too_late = store_unprojectable(audit, "globex", occurred_at="2300-01-01T00:00:00Z")
        audit.record_many(decades_of("globex", 200, seed=6))
        done = audit.project()

        head = audit.app.recorder.max_notification_id()
        assert done == dict.fromkeys(
            ["activity_hourly", "audit_events", "incidents", "monitors"], head
        )
        assert audit.reader("acme").count(EventQuery()) == 300
        assert audit.reader("globex").count(EventQuery()) == 200
        statuses = {s.name: s for s in audit.projections.status(audit.clickhouse)}
        for name in ("audit_events", "activity_hourly"):
            assert (statuses[name].state, statuses[name].dead_letters, statuses[name].lag) == (
                "degraded",
                2,
                0,
            )
        for name in ("incidents", "monitors"):  # standalone comments are not theirs to hold
            assert (statuses[name].state, statuses[name].dead_letters) == ("ok", 0)

        letters = audit.projections.dead_letters(audit.clickhouse, ["audit_events"])
        assert [(x.event_id, x.workspace_id, x.action) for x in letters] == [
            (poison, "acme", "incident.comment_added"),
            (too_late, "globex", "incident.comment_added"),
        ]
        assert all("outside 1900-01-01..2299-12-31" in x.error for x in letters)
        assert all(x.status is LetterStatus.PARKED for x in letters)
        assert [x.event_id for x in audit.projections.dead_letters(
            audit.clickhouse, workspace_id="globex"
        )] == [too_late, too_late]  # fmt: skip

        # Mended in the store, a retry brings it in; the other one is skipped for good.
        mend(audit, poison)
        runner, client = audit.projections, audit.clickhouse
        mine = runner.dead_letters(client, workspace_id="acme")
        assert runner.retry_dead_letters(client, mine) == []
        assert audit.reader("acme").count(EventQuery()) == 301
        assert audit.reader("acme").get(UUID(poison)).occurred_at.year == 1999
        runner.skip_dead_letters(client, runner.dead_letters(client))
        assert runner.dead_letters(client) == []
        resolved = {
            (x.model, x.workspace_id, x.status) for x in runner.dead_letters(client, status=None)
        }
        assert resolved >= {
            ("audit_events", "globex", LetterStatus.SKIPPED),
            ("audit_events", "acme", LetterStatus.RETRIED),
        }
        assert {s.state for s in runner.status(client)} == {"ok"}
        # The roll-up was rebuilt whole by the retry: it counts the mended event too.
        daily = audit.reader("acme").stats(
            interval="day", since=EARLIEST, until=datetime(2299, 12, 31, tzinfo=UTC)
        )
        assert sum(b.events for b in daily.buckets) == 301


def fold_notes(previous: Row | None, record: EventRecord) -> Row:
    if record.metadata.get("body") == "boom":
        raise ValueError("this fold cannot take a boom")
    row = dict(previous) if previous else {"workspace_id": record.workspace_id, "notes": 0}
    row.update(stream_id=record.stream_id, notes=row["notes"] + 1)
    return row


NOTES = StateTable(
    name="note_counts",
    description="Comments per stream, by a fold that refuses some.",
    handles=("incident.*",),
    starts_with="incident.opened",
    key_column="stream_id",
    fold=fold_notes,
    table=Table(
        columns=(
            Column("workspace_id", "String"),
            Column("stream_id", "UUID"),
            Column("version", "UInt32"),
            Column("notes", "UInt32"),
            Column("updated_at", "DateTime64(6, 'UTC')"),
            Column("position", "UInt64"),
        ),
        engine="ReplacingMergeTree(version)",
        order_by=("stream_id",),
    ),
)


def test_an_event_the_fold_refuses_is_parked_and_its_stream_goes_on(pg_settings: Settings) -> None:
    from auditcore import Incident  # noqa: PLC0415

    with AuditCore(pg_settings) as audit:
        incident = Incident.open("acme", title="t", severity="sev2", service="api")
        for body in ("one", "boom", "two"):
            incident.comment(body)
        stored = audit.save(incident)
        runner = ProjectionRunner(
            audit.app, pg_settings.clickhouse_target, ReadModelRegistry([NOTES])
        )
        assert runner.catch_up(audit.clickhouse) == {"note_counts": 4}
        (row,) = audit.clickhouse.query("SELECT notes, version FROM note_counts FINAL").result_rows
        assert row == (3, 4)  # opened, one, two: the boom is left out
        (letter,) = runner.dead_letters(audit.clickhouse)
        assert (letter.event_id, letter.model) == (str(stored[2].event_id), "note_counts")
        assert letter.error == "ValueError: this fold cannot take a boom"
        # Retrying re-folds the stream from its start: still refused, still parked.
        (still,) = runner.retry_dead_letters(audit.clickhouse, [letter])
        assert still.position == letter.position
        assert audit.clickhouse.query("SELECT notes FROM note_counts FINAL").result_rows == [(3,)]


def test_a_read_model_that_refuses_every_event_fails_and_parks_nothing(
    pg_settings: Settings,
) -> None:
    with AuditCore(pg_settings) as audit:
        audit.record_many(decades_of("acme", 20))
        models = ReadModelRegistry([audit.read_models.get("audit_events"), BROKEN])
        runner = ProjectionRunner(audit.app, pg_settings.clickhouse_target, models)
        with pytest.raises(CatchUpFailedError) as failure:
            runner.catch_up(audit.clickhouse)
        assert failure.value.done == {"audit_events": 20, "broken": 0}
        assert list(failure.value.failed) == ["broken"]
        assert "refuses every event of the batch" in failure.value.failed["broken"]
        assert "the others did: audit_events" in str(failure.value)
        assert runner.dead_letters(audit.clickhouse) == []
        statuses = {s.name: s for s in runner.status(audit.clickhouse)}
        assert (statuses["audit_events"].state, statuses["audit_events"].lag) == ("ok", 0)
        assert (statuses["broken"].state, statuses["broken"].lag) == ("failing", 20)


def test_over_http_one_tenants_backfill_and_poison_never_hold_up_another(
    pg_settings: Settings,
) -> None:
    from auditcore.api import ApiConfig  # noqa: PLC0415
    from tests.apiserver import eventually  # noqa: PLC0415
    from tests.test_api import deploy  # noqa: PLC0415

    for deployment in deploy(pg_settings, ApiConfig()):
        with (
            deployment.client("acme") as acme,
            deployment.client("globex") as globex,
            deployment.client("admin") as admin,
        ):
            backfill = [
                {key: value for key, value in draft.items() if key != "workspace_id"}
                | {"occurred_at": draft["occurred_at"].isoformat()}
                for draft in decades_of("acme", 600)
            ]
            assert acme.post("/v1/events", json=backfill).status_code == 201
            poison = store_unprojectable(deployment.audit, "acme")
            posted = globex.post(
                "/v1/events",
                json={"action": "incident.comment_added", "metadata": {"body": "globex here"}},
            )
            assert posted.status_code == 201
            started = time.monotonic()
            (seen,) = deployment.projected("globex", 1)
            assert seen["event_id"] == posted.json()["ids"][0]
            assert time.monotonic() - started < 10
            assert len(deployment.projected("acme", 600)) == 600

            def readiness() -> dict[str, Any] | None:
                ready = admin.get("/readyz")
                assert ready.status_code == 200  # degraded is still ready
                states = {
                    p["name"]: (p["state"], p["dead_letters"], p["lag"])
                    for p in ready.json()["processors"]
                }
                return states if all(lag == 0 for *_, lag in states.values()) else None

            assert eventually(readiness) == {
                "activity_hourly": ("degraded", 1, 0),
                "audit_events": ("degraded", 1, 0),
                "incidents": ("ok", 0, 0),
                "monitors": ("ok", 0, 0),
            }
            letters = acme.get("/v1/dead-letters").json()["items"]
            assert {(x["read_model"], x["event_id"]) for x in letters} == {
                ("activity_hourly", poison),
                ("audit_events", poison),
            }
            assert "outside 1900-01-01..2299-12-31" in letters[0]["error"]
            assert globex.get("/v1/dead-letters").json() == {"items": []}
            assert acme.get("/v1/dead-letters", params={"bogus": 1}).status_code == 400
            with deployment.client("acme_events_only") as narrow:
                only = narrow.get("/v1/dead-letters").json()["items"]
            assert [x["read_model"] for x in only] == ["audit_events"]
