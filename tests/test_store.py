"""Recording and reading back, through the same cases on PostgreSQL and SQLite."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from auditcore import (
    ActionRegistry,
    Actor,
    AuditCore,
    ConflictError,
    EventIdReusedError,
    Incident,
    IncidentRuleError,
    IncidentStatus,
    InvalidEventError,
    Monitor,
    MonitorRuleError,
    StreamNotFoundError,
    UnknownActionError,
    acting_as,
)
from auditcore.events.ids import stream_id_for

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

ALICE = Actor(id="user_alice", name="Alice")


def open_incident(workspace: str = "acme", **kwargs: object) -> Incident:
    return Incident.open(
        workspace, title="API down", severity="sev2", service="api", actor=ALICE, **kwargs
    )


def test_history_is_in_version_order_with_the_envelope(audit: AuditCore) -> None:
    incident = open_incident(source="dashboard")
    incident.acknowledge("on it", actor={"id": "user_bob", "type": "user"})
    incident.assign("user_bob", "Bob")
    incident.resolve("rolled back", root_cause="bad deploy")
    saved = audit.save(incident)

    history = audit.history(incident.id)

    assert [e.action for e in history] == [
        "incident.opened",
        "incident.acknowledged",
        "incident.assigned",
        "incident.resolved",
    ]
    assert [e.version for e in history] == [1, 2, 3, 4]
    assert history == saved
    opened = history[0]
    assert opened.stream_id == incident.id == stream_id_for("acme", opened.event_id)
    assert opened.actor == ALICE
    assert opened.source == "dashboard"
    assert opened.metadata == {"title": "API down", "severity": "sev2", "service": "api"}
    assert opened.targets[0].model_dump() == {
        "type": "incident",
        "id": str(incident.id),
        "name": "API down",
    }
    assert history[1].actor.id == "user_bob"
    assert {t.type for t in history[2].targets} == {"incident", "user"}
    assert all(e.recorded_at is not None and e.recorded_at.tzinfo is UTC for e in history)


def test_aggregate_state_is_rebuilt_from_the_store(audit: AuditCore) -> None:
    incident = open_incident()
    incident.change_severity("sev1", "customers affected")
    incident.resolve("fixed")
    incident.reopen("came back")
    audit.save(incident)

    loaded = audit.get(Incident, incident.id)

    assert (loaded.version, loaded.severity, loaded.status, loaded.times_reopened) == (
        4,
        "sev1",
        IncidentStatus.OPEN,
        1,
    )


def test_actor_defaults_to_system_and_ambient_provenance_applies(audit: AuditCore) -> None:
    monitor = Monitor.create("acme", name="Home", url="https://example.com/")
    with acting_as(
        {"id": "key_1", "type": "api_key"},
        source="api",
        context={"ip": "203.0.113.9", "request_id": "r1"},
    ):
        monitor.pause("maintenance")
    audit.save(monitor)

    created, paused = audit.history(monitor.id)

    assert created.actor.id == "system"
    assert created.actor.type == "system"
    assert created.source == "system"
    assert (paused.actor.id, paused.actor.type, paused.source) == ("key_1", "api_key", "api")
    assert str(paused.context.ip) == "203.0.113.9"
    assert paused.context.request_id == "r1"


def test_occurred_at_is_kept_in_utc_to_the_microsecond(audit: AuditCore) -> None:
    moment = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC) + timedelta(hours=0)
    local = moment.astimezone(UTC).astimezone(datetime.now().astimezone().tzinfo)
    event = audit.record(
        "incident.comment_added", workspace_id="acme", metadata={"body": "note"}, occurred_at=local
    )

    (stored,) = audit.history(event.stream_id)

    assert stored.occurred_at == moment
    assert stored.occurred_at.tzinfo is UTC


def test_concurrent_modification_raises_a_clear_conflict(audit: AuditCore) -> None:
    incident = open_incident()
    audit.save(incident)
    first, second = audit.get(Incident, incident.id), audit.get(Incident, incident.id)
    first.acknowledge()
    audit.save(first)
    second.comment("stale write")

    with pytest.raises(ConflictError, match=rf"{incident.id} at version 2.*Reload the aggregate"):
        audit.save(second)

    assert [e.action for e in audit.history(incident.id)] == [
        "incident.opened",
        "incident.acknowledged",
    ]


def test_update_retries_commands_until_every_writer_lands(audit: AuditCore) -> None:
    incident = open_incident()
    audit.save(incident)
    writers = 6
    start = threading.Barrier(writers)
    failures: list[BaseException] = []

    def comment(n: int) -> None:
        start.wait()
        try:
            audit.update(
                Incident, incident.id, lambda inc: inc.comment(f"comment {n}"), attempts=50
            )
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=comment, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    history = audit.history(incident.id)
    assert [e.version for e in history] == list(range(1, writers + 2))
    assert sorted(e.metadata["body"] for e in history[1:]) == sorted(
        f"comment {n}" for n in range(writers)
    )


def test_saving_many_aggregates_is_one_transaction(audit: AuditCore) -> None:
    stale = open_incident()
    audit.save(stale)
    rival = audit.get(Incident, stale.id)
    rival.acknowledge()
    audit.save(rival)
    fresh_monitor = Monitor.create("acme", name="Home", url="https://example.com/")
    fresh_incident = open_incident()
    stale.comment("from a stale copy")

    with pytest.raises(ConflictError):
        audit.save(fresh_monitor, fresh_incident, stale)

    for stream_id in (fresh_monitor.id, fresh_incident.id):
        with pytest.raises(StreamNotFoundError):
            audit.history(stream_id)


def test_domain_rules_refuse_and_record_nothing(audit: AuditCore) -> None:
    incident = open_incident()
    incident.resolve("done")
    monitor = Monitor.create("acme", name="Home", url="https://example.com/")
    monitor.delete()
    audit.save(incident, monitor)

    with pytest.raises(IncidentRuleError, match="already resolved; reopen it first"):
        incident.resolve("again")
    with pytest.raises(MonitorRuleError, match="it has been deleted"):
        monitor.pause()

    assert audit.save(incident, monitor) == []
    assert len(audit.history(incident.id)) == 2
    assert len(audit.history(monitor.id)) == 2


@pytest.mark.parametrize(
    ("action", "metadata", "workspace", "expected"),
    [
        (
            "incident.opend",
            {},
            "acme",
            r"action: 'incident.opend' is not a registered action; did you mean 'incident.opened'",
        ),
        (
            "incident.opened",
            {"title": "x", "severity": "sev9", "service": "api"},
            "acme",
            r"metadata.severity: Input should be 'sev1', 'sev2', 'sev3' or 'sev4'",
        ),
        (
            "incident.opened",
            {"title": "x", "severity": "sev1"},
            "acme",
            r"metadata.service: Field required",
        ),
        (
            "incident.opened",
            {"title": "x", "severity": "sev1", "service": "a", "extra": 1},
            "acme",
            r"metadata.extra: undeclared key: the action's schema does not declare it",
        ),
        (
            "incident.comment_added",
            {"body": "ok"},
            "bad workspace",
            r"workspace_id: 'bad workspace' is not valid: use 1-64 letters",
        ),
    ],
)
def test_invalid_events_are_rejected_with_where_and_why(
    audit: AuditCore, action: str, metadata: dict[str, object], workspace: str, expected: str
) -> None:
    event_id = uuid4()
    with pytest.raises(InvalidEventError, match=expected):
        audit.record(action, workspace_id=workspace, metadata=metadata, event_id=event_id)
    with pytest.raises(StreamNotFoundError):
        audit.event(event_id, workspace_id=workspace)


def test_every_problem_is_reported_at_once(audit: AuditCore) -> None:
    with pytest.raises(InvalidEventError) as caught:
        audit.record(
            "incident.opened",
            workspace_id="acme",
            source="Bad Source",
            metadata={"title": "", "severity": "sev0", "service": "api"},
            actor={"id": ""},
        )
    locations = [location for location, _ in caught.value.problems]
    assert locations == ["actor.id", "source", "metadata.title", "metadata.severity"]
    assert "4 problems" in str(caught.value)


def test_unknown_actions_must_be_registered(audit: AuditCore) -> None:
    with pytest.raises(UnknownActionError, match=r"auditcore actions register NAME --schema FILE"):
        audit.record("member.invited", workspace_id="acme")


def test_rerecording_the_same_event_id_records_it_once(audit: AuditCore) -> None:
    event_id = uuid4()
    first = audit.record(
        "incident.comment_added",
        workspace_id="acme",
        metadata={"body": "hi"},
        actor=ALICE,
        event_id=event_id,
    )
    again = audit.record(
        "incident.comment_added",
        workspace_id="acme",
        metadata={"body": "hi"},
        actor=ALICE,
        event_id=event_id,
    )

    assert again == first
    assert audit.history(first.stream_id) == [first]


def test_reusing_an_event_id_for_other_content_is_refused(audit: AuditCore) -> None:
    event_id = uuid4()
    audit.record(
        "incident.comment_added", workspace_id="acme", metadata={"body": "hi"}, event_id=event_id
    )

    with pytest.raises(EventIdReusedError, match=f"event_id {event_id} was already recorded"):
        audit.record(
            "incident.comment_added",
            workspace_id="acme",
            metadata={"body": "bye"},
            event_id=event_id,
        )
    incident = audit.save(open_incident())[0]
    loaded = audit.get(Incident, incident.stream_id)
    loaded.comment("bye", event_id=event_id)
    with pytest.raises(EventIdReusedError):
        audit.save(loaded)
    assert len(audit.history(incident.stream_id)) == 1


def test_retried_aggregate_commands_with_an_event_id_apply_once(audit: AuditCore) -> None:
    opened_id = uuid4()
    audit.save(open_incident(event_id=opened_id))
    audit.save(open_incident(event_id=opened_id))  # a retried "open" is the same stream
    key = stream_id_for("acme", opened_id)

    stale = audit.get(Incident, key)
    acknowledgement = uuid4()
    audit.update(Incident, key, lambda inc: inc.acknowledge(event_id=acknowledgement))
    audit.update(Incident, key, lambda inc: inc.acknowledge(event_id=acknowledgement))
    stale.acknowledge(event_id=acknowledgement)  # raced the first attempt
    audit.save(stale)

    assert [e.action for e in audit.history(key)] == ["incident.opened", "incident.acknowledged"]
    assert audit.event(acknowledgement, workspace_id="acme").version == 2


def test_events_are_found_by_id_within_their_workspace(audit: AuditCore) -> None:
    event = audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "x"})

    assert audit.event(event.event_id, workspace_id="acme") == event
    with pytest.raises(StreamNotFoundError):
        audit.event(event.event_id, workspace_id="globex")
    with pytest.raises(StreamNotFoundError):
        audit.history(event.stream_id, workspace_id="globex")


def test_loading_a_stream_as_the_wrong_aggregate_is_refused(audit: AuditCore) -> None:
    monitor = Monitor.create("acme", name="Home", url="https://example.com/")
    audit.save(monitor)

    with pytest.raises(TypeError, match="it is not a Incident"):
        audit.get(Incident, monitor.id)


def test_metadata_limits_are_configurable(audit: AuditCore) -> None:
    registry = ActionRegistry()
    registry.register("note.added")
    strict = AuditCore(
        audit.settings, registry=registry.copy(limits=registry.limits.__class__(max_keys=2))
    )
    with strict, pytest.raises(InvalidEventError, match="has 3 keys; the limit is 2"):
        strict.record("note.added", workspace_id="acme", metadata={"a": 1, "b": 2, "c": 3})


def test_record_many_is_all_or_nothing_and_names_the_bad_draft(audit: AuditCore) -> None:
    drafts = [
        {"action": "incident.comment_added", "workspace_id": "acme", "metadata": {"body": f"{n}"}}
        for n in range(5)
    ]
    stored = audit.record_many(drafts)
    assert [audit.event(e.event_id, workspace_id="acme") for e in stored] == stored

    bad = [*drafts, {"action": "incident.comment_added", "workspace_id": "acme", "metadata": {}}]
    bad[0] = {**bad[0], "event_id": uuid4()}
    with pytest.raises(InvalidEventError, match=r"\[5\]\.metadata\.body: Field required"):
        audit.record_many(bad)
    with pytest.raises(StreamNotFoundError):
        audit.event(bad[0]["event_id"], workspace_id="acme")  # type: ignore[arg-type]


def test_a_large_batch_with_an_already_stored_event_id_stores_the_rest_once(
    audit: AuditCore,
) -> None:
    key = uuid4()
    first = audit.record(
        "incident.comment_added", workspace_id="acme", metadata={"body": "x"}, event_id=key
    )
    drafts = [
        {"action": "incident.comment_added", "workspace_id": "acme", "metadata": {"body": f"{n}"}}
        for n in range(60)  # large enough for the bulk (COPY) path on PostgreSQL
    ]
    drafts[30] = {
        "action": "incident.comment_added",
        "workspace_id": "acme",
        "metadata": {"body": "x"},
        "event_id": key,
    }

    stored = audit.record_many(drafts)

    assert stored[30] == first
    assert len({e.event_id for e in stored}) == 60
    assert all(audit.event(e.event_id, workspace_id="acme") == e for e in stored)
    drafts[30] = {**drafts[30], "metadata": {"body": "changed"}}
    drafts[0] = {**drafts[0], "event_id": uuid4()}
    with pytest.raises(EventIdReusedError):
        audit.record_many(drafts)
    with pytest.raises(StreamNotFoundError):
        audit.event(drafts[0]["event_id"], workspace_id="acme")  # type: ignore[arg-type]


def test_a_draft_without_its_action_or_workspace_is_named(audit: AuditCore) -> None:
    with pytest.raises(InvalidEventError, match=r"\[1\]\.workspace_id: Field required"):
        audit.record_many(
            [
                {
                    "action": "incident.comment_added",
                    "workspace_id": "acme",
                    "metadata": {"body": "a"},
                },
                {"action": "incident.comment_added", "metadata": {"body": "b"}},
            ]
        )
