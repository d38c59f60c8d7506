"""Bad input is refused at the door with an ``InvalidEventError`` naming the field — whichever
way it comes (``record``, ``record_many``, ``dispatch``, an aggregate's command) — and nothing
is stored: wrong types, misspelt keywords, non-finite numbers, moments the read side cannot
hold or that lie in the future beyond clock skew."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from pydantic import BaseModel, JsonValue

from auditcore import (
    ActionRegistry,
    AuditCore,
    ConfigurationError,
    Incident,
    InvalidEventError,
    Settings,
)
from auditcore.api import ApiConfig
from auditcore.events.limits import (
    DEFAULT_MAX_FUTURE,
    EARLIEST,
    LATEST,
    EventLimits,
    default_max_future,
)

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

Record = Callable[..., Any]


class Measured(BaseModel):
    reading: float
    extra: dict[str, JsonValue] = {}


@pytest.fixture
def core(store_settings: Settings) -> Any:
    registry = ActionRegistry()
    registry.register("sensor.read", Measured)
    registry.register("note.added")
    with AuditCore(store_settings, registry=registry) as audit:
        yield audit


def ways(audit: AuditCore) -> dict[str, Record]:
    """Each way to record one standalone event, returning it once stored."""
    return {
        "record": audit.record,
        "dispatch": lambda action, **kw: audit.dispatch(action, **kw).result(timeout=30),
        "record_many": lambda action, **kw: audit.record_many([{"action": action, **kw}])[0],
    }


WAYS = ["record", "dispatch", "record_many"]


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize(
    ("kwargs", "field", "says"),
    [
        ({"targets": None}, "targets", "should be a list, not NoneType"),
        ({"targets": 7}, "targets", "should be a list, not int"),
        ({"targets": "user:u1"}, "targets", "should be a list, not str"),
        ({"targets": {"type": "user", "id": "u1"}}, "targets", "should be a list, not dict"),
        ({"actr": {"id": "alice"}}, "actr", "unknown field; expected one of actor"),
        ({"event_id": 0}, "event_id", "UUID"),
        ({"event_id": ""}, "event_id", "UUID"),
        ({"metadata": []}, "metadata", "valid dictionary"),
        ({"metadata": {"k": float("nan")}}, "metadata.k", "JSON has no NaN or infinity"),
        ({"metadata": {"k": float("inf")}}, "metadata.k", "JSON has no NaN or infinity"),
        ({"workspace_id": None}, "workspace_id", "valid string"),
        ({"occurred_at": "yesterday"}, "occurred_at", "valid datetime"),
    ],
)
def test_bad_input_is_refused_naming_the_field(
    core: AuditCore, way: str, kwargs: dict[str, Any], field: str, says: str
) -> None:
    arguments = {"workspace_id": "acme", **kwargs}
    located = f"[0].{field}" if way == "record_many" else field
    with pytest.raises(InvalidEventError) as refused:
        ways(core)[way]("note.added", **arguments)
    assert [where for where, _ in refused.value.problems] == [located]
    assert says in refused.value.problems[0][1]
    assert core.app.recorder.max_notification_id() is None


@pytest.mark.parametrize("way", WAYS)
def test_non_finite_numbers_are_refused_at_any_depth(core: AuditCore, way: str) -> None:
    for metadata, field in [
        ({"reading": float("-inf")}, "metadata.reading"),
        ({"reading": 1.5, "extra": {"a": [0.0, float("nan")]}}, "metadata.extra.a[1]"),
    ]:
        with pytest.raises(InvalidEventError) as refused:
            ways(core)[way]("sensor.read", workspace_id="acme", metadata=metadata)
        assert refused.value.problems[0][0].removeprefix("[0].") == field
    stored = ways(core)[way]("sensor.read", workspace_id="acme", metadata={"reading": -0.0})
    assert core.event(stored.event_id, workspace_id="acme") == stored


def test_an_aggregates_command_is_refused_the_same_way(core: AuditCore) -> None:
    with pytest.raises(InvalidEventError) as refused:
        Incident.open("acme", title="t", severity="sev1", service="api", targets=None)
    assert [where for where, _ in refused.value.problems] == ["targets"]
    future = datetime.now(UTC) + timedelta(hours=1)
    with pytest.raises(InvalidEventError, match=r"occurred_at: .* is in the future"):
        Incident.open("acme", title="t", severity="sev1", service="api", occurred_at=future)


@pytest.mark.parametrize("way", WAYS)
def test_occurred_at_must_be_storable_and_not_beyond_clock_skew(core: AuditCore, way: str) -> None:
    record = ways(core)[way]

    def attempt(moment: datetime) -> Any:
        return record("note.added", workspace_id="acme", occurred_at=moment)

    for moment in (EARLIEST, datetime(1901, 7, 4, 12, tzinfo=UTC), datetime.now(UTC)):
        # Backdating: fine.
        assert core.event(attempt(moment).event_id, workspace_id="acme").occurred_at == moment
    assert attempt(datetime.now(UTC) + DEFAULT_MAX_FUTURE - timedelta(seconds=5))
    for moment, says in [
        (EARLIEST - timedelta(microseconds=1), "outside the range events can hold"),
        (datetime(1, 1, 1, tzinfo=UTC), "outside the range events can hold"),
        # Times whose UTC falls beyond what Python's datetime holds at all.
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))), "outside the range"),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(minutes=1))), "outside the range"),
        (datetime(9999, 12, 31, 23, 59, tzinfo=timezone(-timedelta(hours=23))), "outside the"),
        (LATEST + timedelta(microseconds=1), "outside the range events can hold"),
        (datetime.now(UTC) + DEFAULT_MAX_FUTURE + timedelta(seconds=5), "is in the future"),
        (LATEST, "is in the future"),
    ]:
        with pytest.raises(InvalidEventError) as refused:
            attempt(moment)
        ((where, what),) = refused.value.problems
        assert (where.removeprefix("[0]."), says in what) == ("occurred_at", True), what


def test_the_future_limit_is_configurable(store_settings: Settings) -> None:
    registry = ActionRegistry(max_future=timedelta(days=365 * 300))
    registry.register("note.added")
    with AuditCore(store_settings, registry=registry) as audit:
        assert audit.record("note.added", workspace_id="acme", occurred_at=LATEST)
        with pytest.raises(InvalidEventError, match="outside the range events can hold"):
            audit.record("note.added", workspace_id="acme", occurred_at=LATEST + timedelta(1))
    strict = registry.copy(max_future=timedelta(0))
    with AuditCore(store_settings, registry=strict) as audit:
        soon = datetime.now(UTC) + timedelta(seconds=2)
        with pytest.raises(InvalidEventError, match="more than 0 s ahead"):
            audit.dispatch("note.added", workspace_id="acme", occurred_at=soon)

    assert default_max_future({}) == DEFAULT_MAX_FUTURE
    assert default_max_future({"AUDITCORE_MAX_FUTURE_SECONDS": "30"}) == timedelta(seconds=30)
    for bad in ("soon", "-1", "nan", "1e12"):
        with pytest.raises(ConfigurationError, match="AUDITCORE_MAX_FUTURE_SECONDS"):
            default_max_future({"AUDITCORE_MAX_FUTURE_SECONDS": bad})


def test_an_action_name_events_cannot_hold_cannot_be_registered() -> None:
    registry = ActionRegistry()
    longest = "a." + "b" * 98
    registry.register(longest)
    with pytest.raises(ValueError, match="101 characters long; events hold at most 100"):
        registry.register(longest + "c")


def test_a_draft_that_is_not_a_mapping_is_named(core: AuditCore) -> None:
    with pytest.raises(InvalidEventError) as refused:
        core.record_many([{"action": "note.added", "workspace_id": "acme"}, ["note.added"]])
    assert [where for where, _ in refused.value.problems] == ["[1]"]
    with pytest.raises(InvalidEventError, match="action: expected a string"):
        core.record(None, workspace_id="acme")  # type: ignore[arg-type]
    assert core.app.recorder.max_notification_id() is None


def test_an_idempotent_repeat_is_still_recognised(core: AuditCore) -> None:
    key = uuid4()
    first = core.record("sensor.read", workspace_id="acme", metadata={"reading": 0.1}, event_id=key)
    again = core.record("sensor.read", workspace_id="acme", metadata={"reading": 0.1}, event_id=key)
    assert again == first


def _targets(count: int, name: str = "") -> list[dict[str, str]]:
    return [
        {"type": "user", "id": f"u{n}", **({"name": name} if name else {})} for n in range(count)
    ]


@pytest.mark.parametrize("way", WAYS)
def test_targets_and_the_whole_event_are_capped(core: AuditCore, way: str) -> None:
    record = ways(core)[way]
    limits = EventLimits()
    prefix = "[0]." if way == "record_many" else ""
    head = core.app.recorder.max_notification_id()
    cases = [
        # 1,900 targets (1 MB) were once stored as one event.
        ({"targets": _targets(1900)}, [("targets", "has 1900 targets; the limit is 50")]),
        # 50 targets with 256-character names (512 bytes each): within the count, over the bytes.
        ({"targets": _targets(50, "é" * 256)}, [("targets", "bytes; the limit is 16384")]),
        # Metadata and targets each within their own bounds, but too much together.
        (
            {
                "targets": _targets(40, "n" * 256),
                "metadata": {f"k{n}": "é" * 495 for n in range(30)},
            },
            [("event", "the whole event serializes to")],
        ),
    ]
    for extra, expected in cases:
        with pytest.raises(InvalidEventError) as refused:
            record("note.added", workspace_id="acme", **extra)
        problems = refused.value.problems
        for where, says in expected:  # each bound breached is named, with its field
            assert any(w == prefix + where and says in what for w, what in problems), problems
    assert core.app.recorder.max_notification_id() == head
    # Right at the bounds, an event is stored.
    stored = record("note.added", workspace_id="acme", targets=_targets(limits.max_targets))
    assert len(stored.targets) == limits.max_targets


def test_the_caps_are_configurable(store_settings: Settings) -> None:
    registry = ActionRegistry(event_limits=EventLimits(max_targets=2))
    registry.register("note.added")
    with AuditCore(store_settings, registry=registry) as audit:
        audit.record("note.added", workspace_id="acme", targets=_targets(2))
        with pytest.raises(InvalidEventError, match="has 3 targets; the limit is 2"):
            audit.record("note.added", workspace_id="acme", targets=_targets(3))


def test_the_api_refuses_an_event_of_1900_targets(pg_settings: Settings) -> None:
    # Imported here: the API's test helpers start servers, which only this test needs.
    from tests.test_api import deploy  # noqa: PLC0415

    for api in deploy(pg_settings, ApiConfig(run_processors=False)):
        with api.client("acme") as client:
            body = {"action": "monitor.paused", "metadata": {}, "targets": _targets(1900)}
            response = client.post("/v1/events", json=body)
        assert response.status_code == 422, response.text
        problems = response.json()["error"]["problems"]
        assert {"location": "body.targets", "message": "has 1900 targets; the limit is 50"} in (
            problems
        )
        assert api.stored() == 0
