"""The envelope, its bounds and its stored form, checked over generated inputs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from auditcore import (
    ActionRegistry,
    AuditEvent,
    InvalidEventError,
    MetadataLimits,
    RequestContext,
    Target,
)
from auditcore.events.factory import build_event
from auditcore.store.mapper import AuditMapper

words = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.text(max_size=30)
)
flat_metadata = st.dictionaries(st.text(min_size=1, max_size=40), scalars, max_size=50)
# Whatever the read side can hold, in any zone (a day inside the bounds, for the offsets).
aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 2),
    max_value=datetime(2299, 12, 30),
    timezones=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
    ),
)


def registry_with(action: str) -> ActionRegistry:
    registry = ActionRegistry(max_future=timedelta(days=300 * 366))  # any future moment
    registry.register(action)
    return registry


@given(st.lists(words, min_size=2, max_size=4).map(".".join), flat_metadata, aware_datetimes)
def test_stored_form_round_trips_and_is_deterministic(
    action: str, metadata: dict[str, Any], occurred_at: datetime
) -> None:
    registry = registry_with(action)
    recorded_at = datetime.now(UTC)
    event_id = uuid4()

    def built(metadata: dict[str, Any]) -> AuditEvent:
        return build_event(
            registry,
            action=action,
            workspace_id="acme",
            stream_id=None,
            version=1,
            metadata=metadata,
            provenance={
                "occurred_at": occurred_at,
                "event_id": event_id,
                "targets": [Target(type="user", id="u1")],
            },
        ).with_recorded_at(recorded_at)

    event = built(metadata)
    reordered = built(dict(reversed(list(metadata.items()))))
    mapper = AuditMapper(registry)

    stored = mapper.to_stored_event(event)

    assert stored.topic == action
    assert stored.state == mapper.to_stored_event(reordered).state
    assert list(event.metadata) == sorted(event.metadata)
    assert mapper.to_domain_event(stored) == event
    assert event.occurred_at == occurred_at
    assert event.occurred_at.tzinfo is UTC


@given(st.text(max_size=70))
def test_action_names_are_dotted_lowercase_words(name: str) -> None:
    looks_dotted = (
        len(name) <= 100
        and name.count(".") >= 1
        and all(
            part[:1].isascii()
            and part[:1].isalpha()
            and part[:1].islower()
            and all(c.isascii() and (c.isdigit() or c == "_" or c.islower()) for c in part)
            for part in name.split(".")
        )
    )
    accepted = True
    try:
        AuditEvent(
            event_id=uuid4(),
            workspace_id="acme",
            stream_id=uuid4(),
            version=1,
            action=name,
            occurred_at=datetime.now(UTC),
        )
    except ValidationError:
        accepted = False
    assert accepted == looks_dotted


def test_naive_timestamps_are_refused_with_a_fix() -> None:
    with pytest.raises(ValidationError, match=r"no timezone; pass an aware datetime"):
        AuditEvent(
            event_id=uuid4(),
            workspace_id="acme",
            stream_id=uuid4(),
            version=1,
            action="a.b",
            occurred_at=datetime(2026, 1, 1),
        )


def test_a_target_listed_twice_is_refused() -> None:
    registry = registry_with("note.added")
    twice = [Target(type="user", id="1"), Target(type="user", id="1")]
    with pytest.raises(InvalidEventError, match="targets: the same target"):
        build_event(
            registry,
            action="note.added",
            workspace_id="acme",
            stream_id=None,
            version=1,
            metadata={},
            provenance={"targets": twice},
        )


@given(
    st.integers(min_value=0, max_value=80),
    st.integers(min_value=1, max_value=60),
    st.integers(min_value=0, max_value=700),
)
def test_metadata_bounds_default_to_workos_limits(
    keys: int, key_length: int, value_length: int
) -> None:
    metadata: dict[str, Any] = {
        f"{n:03d}".ljust(key_length, "k"): "v" * value_length for n in range(keys)
    }
    registry = registry_with("note.added")

    try:
        registry.validate_metadata("note.added", metadata)
    except InvalidEventError as error:
        messages = " | ".join(f"{loc}: {msg}" for loc, msg in error.problems)
        assert (keys > 50) == (f"has {keys} keys; the limit is 50" in messages)
        assert (keys > 0 and key_length > 40) == ("the limit is 40" in messages)
        assert (keys > 0 and value_length > 500) == ("the limit is 500" in messages)
        assert (
            keys > 50
            or (keys > 0 and (key_length > 40 or value_length > 500))
            or ("the limit is 32768" in messages)
        )
    else:
        assert keys <= 50
        assert keys == 0 or (key_length <= 40 and value_length <= 500)


def test_nested_values_are_bounded_and_located() -> None:
    limits = MetadataLimits(max_keys=5, max_value_length=3)
    problems = limits.check({"a": {"b": ["ok", "long"]}, "c": [1, 2, 3]})
    assert ("metadata.a.b[1]", "value is 4 characters long; the limit is 3") in problems
    assert ("metadata", "has 8 keys; the limit is 5 (nested keys and list items count too)") in (
        problems
    )


def test_freeform_metadata_takes_only_flat_scalars() -> None:
    registry = registry_with("note.added")
    with pytest.raises(InvalidEventError, match=r"metadata.nested"):
        registry.validate_metadata("note.added", {"nested": {"a": 1}})


def test_integers_beyond_64_bits_are_refused_with_advice() -> None:
    registry = registry_with("note.added")
    with pytest.raises(InvalidEventError, match=r"metadata\.big: integer is outside the 64-bit"):
        registry.validate_metadata("note.added", {"big": 2**70, "ok": 2**63})


@given(st.ip_addresses())
def test_ip_addresses_are_kept_in_canonical_form(address: Any) -> None:
    context = RequestContext.model_validate({"ip": str(address)})
    assert context.ip == str(address)
    assert RequestContext.model_validate({"ip": str(address).upper()}).ip == str(address)


@pytest.mark.parametrize("bad", ["256.1.1.1", "1.2.3", "01.2.3.4", "example.com", ""])
def test_malformed_ip_addresses_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="does not appear to be an IPv4 or IPv6 address"):
        RequestContext.model_validate({"ip": bad})


def test_event_ids_are_distinct_version_4_uuids_even_across_a_fork() -> None:
    import os  # noqa: PLC0415

    from auditcore.events.ids import new_event_id  # noqa: PLC0415

    mine = {new_event_id() for _ in range(3000)}
    assert len(mine) == 3000
    assert {u.version for u in mine} == {4}
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        os.write(write, b"".join(new_event_id().bytes for _ in range(100)))
        os._exit(0)
    os.waitpid(child, 0)
    theirs = os.read(read, 1600)
    ours = b"".join(new_event_id().bytes for _ in range(100))
    assert theirs != ours
