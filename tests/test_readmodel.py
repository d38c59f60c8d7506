"""The read API against PostgreSQL + chDB: every query shape compared with the answer
computed independently from the recorded events."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditcore import AuditCore, AuditEvent, Incident, InvalidEventError, Settings
from auditcore.errors import InvalidQueryError, NotEntitledError, NotFoundError
from auditcore.readmodel.queries import EventQuery, WorkspaceReader
from tests.conftest import fresh_postgres_store
from tests.dataset import ACTORS, SERVICES, SOURCES, START, Dataset, build, registry_with_notes


@pytest.fixture(scope="module")
def projected(
    postgres_database: str, module_clickhouse_url: str
) -> Iterator[tuple[AuditCore, Dataset]]:
    settings_ = Settings(fresh_postgres_store(postgres_database), module_clickhouse_url)
    with AuditCore(settings_, registry=registry_with_notes()) as audit:
        data = build(audit)
        audit.project()
        yield audit, data


@pytest.fixture(scope="module")
def acme(projected: tuple[AuditCore, Dataset]) -> WorkspaceReader:
    return projected[0].reader("acme")


def newest_first(events: list[AuditEvent]) -> list[AuditEvent]:
    return sorted(events, key=lambda e: e.occurred_at, reverse=True)


def words_of(event: AuditEvent) -> list[str]:
    """What free text may match, per the read model's contract: action, actor, source,
    targets and the metadata's JSON text (keys and values)."""
    parts = [event.action, event.actor.id, event.actor.name or "", event.source]
    for target in event.targets:
        parts += [target.type, target.id, target.name or ""]
    parts.append(
        json.dumps(event.metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    )
    return [part.lower() for part in parts]


def matches(event: AuditEvent, query: EventQuery) -> bool:
    f = query.filters
    checks = {
        "action": lambda v: event.action == v,
        "action_prefix": event.action.startswith,
        "actor_id": lambda v: event.actor.id == v,
        "actor_type": lambda v: event.actor.type.value == v,
        "source": lambda v: event.source == v,
        "stream_id": lambda v: str(event.stream_id) == v,
        "target": lambda v: any(f"{t.type}:{t.id}" == v for t in event.targets),
        "target_type": lambda v: any(t.type == v for t in event.targets),
        "target_id": lambda v: any(t.id == v for t in event.targets),
    }
    if not all(any(checks[name](value) for value in values) for name, values in f.items()):
        return False
    if query.since and event.occurred_at < query.since:
        return False
    if query.until and event.occurred_at >= query.until:
        return False
    words = words_of(event)
    return all(any(w in part for part in words) for w in (query.text or "").lower().split())


def everything(reader: WorkspaceReader, query: EventQuery) -> list[AuditEvent]:
    found: list[AuditEvent] = []
    cursor = None
    while True:
        page = reader.events(
            EventQuery(query.filters, query.since, query.until, query.text, query.limit, cursor)
        )
        found += page.items
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


@st.composite
def queries(draw: st.DrawFn, data: Dataset) -> EventQuery:
    events = data.in_workspace("acme")
    sample = st.sampled_from(events)
    filters: dict[str, list[str]] = {}
    options: dict[str, Any] = {
        "action": lambda: [draw(sample).action for _ in range(draw(st.integers(1, 2)))],
        "action_prefix": lambda: [draw(st.sampled_from(["incident.", "monitor.", "note."]))],
        "actor_id": lambda: [draw(st.sampled_from(ACTORS)).id],
        "actor_type": lambda: [draw(st.sampled_from(ACTORS)).type.value],
        "source": lambda: [draw(st.sampled_from(SOURCES))],
        "stream_id": lambda: [str(draw(sample).stream_id)],
        "target": lambda: [
            f"{t.type}:{t.id}" for t in [draw(st.sampled_from(draw(sample).targets))]
        ],
        "target_type": lambda: [draw(st.sampled_from(["incident", "monitor", "team", "user"]))],
        "target_id": lambda: [draw(st.sampled_from(draw(sample).targets)).id],
    }
    for name in draw(st.lists(st.sampled_from(sorted(options)), max_size=3, unique=True)):
        filters[name] = sorted(set(options[name]()))
    since = until = None
    if draw(st.booleans()):
        since = START + timedelta(minutes=draw(st.integers(0, 3 * 24 * 60)))
    if draw(st.booleans()):
        until = (since or START) + timedelta(minutes=draw(st.integers(1, 3 * 24 * 60)))
    text = draw(
        st.none()
        | st.sampled_from([*SERVICES, "ROLLED back", "errors #1", "pager", "follow-up", "user_"])
    )
    return EventQuery(filters, since, until, text, limit=draw(st.integers(1, 60)))


@pytest.fixture(scope="module")
def dataset(projected: tuple[AuditCore, Dataset]) -> Dataset:
    return projected[1]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_query_shape_matches_an_independent_answer(
    data: st.DataObject, acme: WorkspaceReader, dataset: Dataset
) -> None:
    query = data.draw(queries(dataset))
    expected = newest_first([e for e in dataset.in_workspace("acme") if matches(e, query)])

    first_page = acme.events(query)
    all_pages = everything(acme, query)

    assert [e.event_id for e in first_page.items] == [e.event_id for e in expected[: query.limit]]
    assert (first_page.next_cursor is not None) == (len(expected) > query.limit)
    assert all_pages == expected


def test_get_and_history_return_the_envelope_as_recorded(
    projected: tuple[AuditCore, Dataset], acme: WorkspaceReader
) -> None:
    audit, data = projected
    for event in data.in_workspace("acme")[:40]:
        assert acme.get(event.event_id) == event
    for stream_id in data.incidents[:10] + data.monitors[:5]:
        store_history = audit.history(stream_id)
        if store_history[0].workspace_id == "acme":
            assert acme.history(stream_id) == store_history


def test_current_incidents_match_the_aggregates(
    projected: tuple[AuditCore, Dataset], acme: WorkspaceReader
) -> None:
    audit, data = projected
    rows = {row["incident_id"]: row for row in acme.current("incidents", limit=1000)}
    expected = [audit.get(Incident, i) for i in data.incidents]
    expected = [incident for incident in expected if incident.workspace_id == "acme"]
    assert set(rows) == {incident.id for incident in expected}
    for incident in expected:
        row = rows[incident.id]
        assert (
            row["version"],
            row["status"],
            row["severity"],
            row["assignee_id"] or None,
            row["comments"],
            row["times_reopened"],
        ) == (
            incident.version,
            incident.status.value,
            incident.severity,
            incident.assignee_id,
            incident.comments,
            incident.times_reopened,
        )
    resolved = acme.current("incidents", {"status": ["resolved"]}, limit=1000)
    assert {r["incident_id"] for r in resolved} == {
        i.id for i in expected if i.status.value == "resolved"
    }


def test_hourly_and_minute_stats_count_what_happened(
    acme: WorkspaceReader, dataset: Dataset
) -> None:
    events = dataset.in_workspace("acme")
    until = START + timedelta(days=3)
    hourly = acme.stats(group_by="action", interval="hour", since=START, until=until)
    expected = Counter(
        (e.occurred_at.replace(minute=0, second=0, microsecond=0), e.action) for e in events
    )
    assert {(b.bucket, b.key): b.events for b in hourly.buckets} == dict(expected)

    window_start = START + timedelta(hours=30)
    minutes = acme.stats(
        group_by="actor", since=window_start, until=window_start + timedelta(hours=5)
    )
    assert minutes.interval == "minute"
    expected_minutes = Counter(
        (e.occurred_at.replace(second=0, microsecond=0), e.actor.id)
        for e in events
        if window_start <= e.occurred_at < window_start + timedelta(hours=5)
    )
    assert {(b.bucket, b.key): b.events for b in minutes.buckets} == dict(expected_minutes)

    daily = acme.stats(
        group_by="source",
        since=START - timedelta(days=30),
        until=until,
        filters={"action_prefix": ["incident."]},
    )
    assert daily.interval == "day"
    assert sum(b.events for b in daily.buckets) == sum(
        1 for e in events if e.action.startswith("incident.")
    )


def test_a_workspace_never_sees_another_workspaces_rows(
    projected: tuple[AuditCore, Dataset],
) -> None:
    audit, data = projected
    globex = audit.reader("globex")
    acme_events = data.in_workspace("acme")
    for event in acme_events[:20]:
        with pytest.raises(NotFoundError):
            globex.get(event.event_id)
        with pytest.raises(NotFoundError):
            globex.history(event.stream_id)
    seen = everything(globex, EventQuery(limit=500))
    assert {e.event_id for e in seen} == {e.event_id for e in data.in_workspace("globex")}
    assert not any(r["workspace_id"] != "globex" for r in globex.current("incidents", limit=1000))
    assert sum(
        b.events
        for b in globex.stats(since=START, until=START + timedelta(days=3), interval="hour").buckets
    ) == len(seen)
    sneaky = audit.reader("acme' OR '1'='1")
    assert sneaky.events(EventQuery(limit=10)).items == []


def test_entitlements_gate_each_read_model(projected: tuple[AuditCore, Dataset]) -> None:
    audit, _ = projected
    reader = audit.reader("acme", entitlements=frozenset({"incidents:read"}))
    assert reader.current("incidents", limit=1)
    with pytest.raises(NotEntitledError, match="needs the 'audit_events:read' entitlement"):
        reader.events(EventQuery())


@pytest.mark.parametrize(
    ("call", "parameter", "message"),
    [
        (
            lambda r: r.events(EventQuery({"colour": ["red"]})),
            "colour",
            "audit_events cannot be filtered by 'colour'; available: action, action_prefix",
        ),
        (
            lambda r: r.events(EventQuery({"stream_id": ["nope"]})),
            "stream_id",
            "'nope' is not valid",
        ),
        (lambda r: r.events(EventQuery({"target": ["incident"]})), "target", "should be TYPE:ID"),
        (lambda r: r.events(EventQuery({"actor_id": [""]})), "actor_id", "1 to 256 characters"),
        (lambda r: r.events(EventQuery(limit=0)), "limit", "between 1 and 1000"),
        (lambda r: r.events(EventQuery(limit=5000)), "limit", "between 1 and 1000"),
        (
            lambda r: r.events(EventQuery(since=datetime(2026, 1, 1))),
            "since",
            "give a timezone",
        ),
        (
            lambda r: r.events(EventQuery(since=START, until=START - timedelta(microseconds=1))),
            "since",
            "not be later than until",
        ),
        (lambda r: r.events(EventQuery(cursor="bm90IGEgY3Vyc29y")), "cursor", "malformed cursor"),
        (lambda r: r.events(EventQuery(text="x" * 201)), "text", "at most 200"),
        (lambda r: r.stats(group_by="colour"), "group_by", "use one of"),  # type: ignore[arg-type]
        (lambda r: r.stats(interval="week"), "interval", "minute, hour, day"),  # type: ignore[arg-type]
        (lambda r: r.current("audit_events"), "read_model", "not a current-state read model"),
    ],
)
def test_malformed_reads_say_which_parameter_is_wrong(
    acme: WorkspaceReader, call: Any, parameter: str, message: str
) -> None:
    with pytest.raises(InvalidQueryError, match=message) as caught:
        call(acme)
    assert caught.value.parameter == parameter


def test_a_cursor_only_continues_its_own_query(acme: WorkspaceReader) -> None:
    page = acme.events(EventQuery({"action_prefix": ["incident."]}, limit=3))
    assert page.next_cursor
    with pytest.raises(InvalidQueryError, match="belongs to a different query"):
        acme.events(EventQuery({"action_prefix": ["monitor."]}, limit=3, cursor=page.next_cursor))


def test_paging_while_events_arrive_returns_every_old_event_once(pg_settings: Settings) -> None:
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        old = [
            audit.record(
                "note.added",
                workspace_id="acme",
                metadata={"n": n},
                occurred_at=START + timedelta(minutes=n),
            )
            for n in range(60)
        ]
        audit.project()
        reader = audit.reader("acme")
        seen: list[AuditEvent] = []
        cursor = None
        for round_ in range(100):
            page = reader.events(EventQuery(limit=7, cursor=cursor))
            seen += page.items
            # Newer events, and backdated ones landing among pages already read and not yet read.
            for offset in (timedelta(days=30), -timedelta(minutes=round_ * 3 + 1)):
                audit.record(
                    "note.added",
                    workspace_id="acme",
                    metadata={"late": round_},
                    occurred_at=START + timedelta(minutes=30) + offset,
                )
            audit.project()
            cursor = page.next_cursor
            if cursor is None:
                break
        ids = [e.event_id for e in seen]
        assert len(ids) == len(set(ids)), "an event was returned twice"
        assert {e.event_id for e in old} <= set(ids)
        assert ids == [e.event_id for e in newest_first(seen)]


def test_invalid_events_never_reach_the_read_model(pg_settings: Settings) -> None:
    with AuditCore(pg_settings) as audit:
        with pytest.raises(InvalidEventError):
            audit.record("incident.comment_added", workspace_id="acme", metadata={"body": ""})
        audit.project()
        assert audit.reader("acme").events(EventQuery()).items == []


def test_time_bounds_are_inclusive_then_exclusive(pg_settings: Settings) -> None:
    moment = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    with AuditCore(pg_settings) as audit:
        event = audit.record(
            "incident.comment_added",
            workspace_id="acme",
            metadata={"body": "edge"},
            occurred_at=moment,
        )
        audit.project()
        reader = audit.reader("acme")
        assert reader.events(EventQuery(since=moment)).items == [event]
        assert reader.events(EventQuery(until=moment)).items == []


def test_stats_buckets_are_whole_intervals(acme: WorkspaceReader, dataset: Dataset) -> None:
    since = START + timedelta(hours=5, minutes=17, seconds=3)
    until = START + timedelta(hours=9, minutes=2)
    hourly = acme.stats(interval="hour", since=since, until=until)
    assert (hourly.since, hourly.until) == (START + timedelta(hours=5), START + timedelta(hours=10))
    expected = sum(
        1 for e in dataset.in_workspace("acme") if hourly.since <= e.occurred_at < hourly.until
    )
    assert sum(b.events for b in hourly.buckets) == expected
