"""The dispatcher's one-pass encoder stores exactly what build_event and the mapper would,
and refuses exactly what they refuse, with the same problems."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import StoredEvent
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, JsonValue

from auditcore import (
    ActionRegistry,
    Actor,
    InvalidEventError,
    MetadataLimits,
    Target,
    UnknownActionError,
    acting_as,
)
from auditcore.events.factory import build_standalone_event
from auditcore.events.ids import stream_id_for
from auditcore.events.provenance import Provenance
from auditcore.store.mapper import AuditMapper, AuditStoredEvent
from auditcore.store.standalone import StandaloneEncoder


class Deploy(BaseModel):
    service: str = Field(max_length=20)
    replicas: int = Field(ge=0)
    note: str | None = None
    labels: dict[str, JsonValue] = {}


class Other(BaseModel):
    service: str


def registry() -> ActionRegistry:
    actions = ActionRegistry(limits=MetadataLimits(max_keys=8, max_value_length=40))
    actions.register("user.updated")  # flat free-form scalars
    actions.register("service.deployed", Deploy, version=2, upcasters={1: dict})
    return actions


class CountingEncoder(StandaloneEncoder):
    """Counts the events handed to build_event, to tell which path took an event."""

    careful = 0

    def _build(self, *args: Any) -> AuditStoredEvent:
        self.careful += 1
        return super()._build(*args)


REGISTRY = registry()
MAPPER = AuditMapper(REGISTRY)
ENCODER = CountingEncoder(REGISTRY, MAPPER)

texts = st.text(max_size=45)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**65), st.floats(), texts)
json_values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3)
)
freeform = st.dictionaries(st.text(max_size=45), scalars | json_values, max_size=10)
deploy = st.fixed_dictionaries(
    {"service": texts, "replicas": st.integers(-2, 5)},
    optional={"note": st.none() | texts, "labels": st.dictionaries(texts, json_values)},
)
# Beyond what events may hold on both sides (1900-2299), and up to now (not in the future).
moments = st.one_of(
    st.datetimes(
        min_value=datetime(1850, 1, 1),
        max_value=datetime(2350, 1, 1),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), None]),
    ),
    st.integers(-3 * 86400, 3600).map(lambda s: datetime.now(UTC) - timedelta(seconds=s)),
    st.sampled_from(
        [datetime(1900, 1, 1, tzinfo=UTC), datetime(1899, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]
    ),
)
actors = st.one_of(
    st.fixed_dictionaries(
        {"id": texts}, optional={"type": st.sampled_from(["user", "robot"]), "name": texts}
    ),
    st.builds(Actor, id=st.text(min_size=1, max_size=10)),
)
targets = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["user", "incident", "Bad Type"]), "id": st.sampled_from("ab")}
        ),
        st.builds(Target, type=st.just("user"), id=st.sampled_from("ab")),
    ),
    max_size=3,
) | st.sampled_from([None, 3, "user:a", {"type": "user", "id": "a"}])
contexts = st.fixed_dictionaries(
    {},
    optional={
        "ip": st.sampled_from(["10.0.0.1", "2001:DB8::1", "256.0.0.1", "nope"]),
        "user_agent": texts,
        "request_id": texts,
    },
)
drafts = st.one_of(
    st.fixed_dictionaries(
        {"action": st.just("user.updated"), "metadata": freeform | st.sampled_from([None, [], ""])}
    ),
    st.fixed_dictionaries(
        {
            "action": st.just("service.deployed"),
            "metadata": deploy | st.builds(Deploy, service=st.just("api"), replicas=st.just(1)),
        }
    ),
    st.fixed_dictionaries(
        {"action": st.just("service.deployed"), "metadata": st.builds(Other, service=texts)}
    ),
).flatmap(
    lambda draft: st.fixed_dictionaries(
        {**{key: st.just(value) for key, value in draft.items()}},
        optional={
            "workspace_id": st.sampled_from(["acme", "ws:1", "-bad", ""]),
            "actor": actors,
            "targets": targets,
            "source": st.sampled_from(["api", "Dashboard"]),
            "context": contexts,
            "occurred_at": moments,
            "event_id": st.uuids().map(str) | st.sampled_from(["not-a-uuid", "", 0]),
            "actr": st.just({"id": "a misspelt keyword"}),
        },
    )
)

RECORDED_AT = re.compile(rb'"recorded_at":"[^"]*"')
OCCURRED_AT = re.compile(rb'"occurred_at":"[^"]*"')


def both_ways(draft: dict[str, Any]) -> tuple[bytes | Exception, bytes | Exception]:
    """(the encoder's stored state, build_event's stored state), or what each raised;
    the moment each ran (recorded_at, and occurred_at unless given) is blanked."""
    fields = dict(draft)
    action = fields.pop("action")
    workspace_id = fields.pop("workspace_id", "acme")
    metadata = fields.pop("metadata")
    fields.setdefault("event_id", str(uuid4()))
    provenance = cast("Provenance", fields)

    def one_pass() -> StoredEvent:
        return ENCODER.encode(action, workspace_id, metadata, provenance)

    def careful() -> StoredEvent:
        event = build_standalone_event(REGISTRY, action, workspace_id, metadata, provenance)
        return MAPPER.to_stored_event(event)

    outcomes: list[bytes | Exception] = []
    for encode in (one_pass, careful):
        try:
            stored = encode()
        except Exception as error:  # compared below
            outcomes.append(error)
            continue
        assert stored.originator_id == stream_id_for(workspace_id, UUID(fields["event_id"]))
        assert stored.originator_version == 1
        assert stored.topic == action
        state = RECORDED_AT.sub(b'"recorded_at":""', stored.state)
        if "occurred_at" not in fields:
            state = OCCURRED_AT.sub(b'"occurred_at":""', state)
        outcomes.append(state)
    return outcomes[0], outcomes[1]


@settings(max_examples=400)
@given(drafts)
def test_the_encoder_stores_and_refuses_exactly_what_build_event_does(
    draft: dict[str, Any],
) -> None:
    handed_over = ENCODER.careful
    fast, careful = both_ways(draft)
    if isinstance(careful, Exception):
        assert type(fast) is type(careful)
        assert str(fast) == str(careful)
    else:
        assert fast == careful
        assert ENCODER.careful == handed_over, "a valid event left the one-pass path"


def test_metadata_is_stored_without_nulls_with_sorted_keys_and_its_schema_version() -> None:
    stored = ENCODER.encode(
        "service.deployed",
        "acme",
        {"replicas": 3, "service": "api", "note": None, "labels": {"b": 1, "a": [None]}},
        {"actor": {"id": "ana"}, "targets": [{"type": "service", "id": "api"}]},
    )
    fast, careful = both_ways(
        {
            "action": "service.deployed",
            "metadata": {"replicas": 3, "service": "api", "labels": {"b": 1, "a": [None]}},
            "actor": {"id": "ana"},
            "targets": [{"type": "service", "id": "api"}],
        }
    )
    assert fast == careful
    assert b'"schema_version":2' in stored.state
    assert stored.state.endswith(
        b'"metadata":{"labels":{"a":[null],"b":1},"replicas":3,"service":"api"}}'
    )
    assert ENCODER._envelopes[("service.deployed", None)][0] is REGISTRY.spec("service.deployed")


def test_each_event_gets_a_fresh_id_that_names_its_stream_and_is_stamped_now() -> None:
    before = datetime.now(UTC)
    first, second = (ENCODER.encode("user.updated", "acme", None, {}) for _ in range(2))
    assert first.event_id != second.event_id
    assert first.originator_id == stream_id_for("acme", first.event_id)
    event = MAPPER.to_domain_event(first)
    assert event.occurred_at == event.recorded_at  # type: ignore[attr-defined]
    assert before <= event.occurred_at <= datetime.now(UTC)  # type: ignore[attr-defined]


def test_ambient_provenance_is_applied() -> None:
    with acting_as({"id": "ops-bot", "type": "service"}, source="cron"):
        stored = ENCODER.encode("user.updated", "acme", {"k": 1}, {})
    event = MAPPER.to_domain_event(stored)
    assert event.actor.id == "ops-bot"  # type: ignore[attr-defined]
    assert event.source == "cron"  # type: ignore[attr-defined]


def test_unknown_actions_are_refused_with_suggestions() -> None:
    with pytest.raises(UnknownActionError, match=r"did you mean .user\.updated"):
        ENCODER.encode("user.update", "acme", None, {})


def test_a_re_registered_action_is_validated_against_its_new_schema() -> None:
    actions = registry()
    encoder = StandaloneEncoder(actions, AuditMapper(actions))
    encoder.encode("service.deployed", "acme", {"service": "api", "replicas": 1}, {})

    class Stricter(BaseModel):
        service: str
        replicas: int = Field(ge=2)

    actions.register("service.deployed", Stricter, replace=True)
    with pytest.raises(InvalidEventError, match=r"metadata\.replicas"):
        encoder.encode("service.deployed", "acme", {"service": "api", "replicas": 1}, {})
