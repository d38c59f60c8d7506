"""What is stored is what ``record()`` and ``dispatch()`` returned, byte for byte, for any
draft (non-finite floats, out-of-range moments, wrong types and misspelt keywords included);
what they refuse is an ``InvalidEventError`` naming the field, and stores nothing."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditcore import AuditCore, AuditEvent, InvalidEventError, Settings, StreamNotFoundError
from tests.test_standalone import REGISTRY, actors, drafts

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough

# Mostly storable drafts (the shared ``drafts`` are mostly refused somewhere), whose numbers
# are often NaN, an infinity or -0.0, at any depth.
numbers = (
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0])
    | st.floats()
    | st.integers(-(2**63), 2**63 - 1)
)
flat = st.dictionaries(
    st.text(max_size=40), st.none() | st.booleans() | numbers | st.text(max_size=40), max_size=6
)
nested = st.recursive(
    st.none() | numbers | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=8), inner, max_size=2)
    ),
    max_leaves=4,
)
storable = st.one_of(
    st.fixed_dictionaries({"action": st.just("user.updated"), "metadata": flat}),
    st.fixed_dictionaries(
        {
            "action": st.just("service.deployed"),
            "metadata": st.fixed_dictionaries(
                {"service": st.text(max_size=20), "replicas": st.integers(0, 5)},
                optional={"labels": st.dictionaries(st.text(max_size=8), nested, max_size=2)},
            ),
        }
    ),
).flatmap(
    lambda draft: st.fixed_dictionaries(
        {key: st.just(value) for key, value in draft.items()},
        optional={
            "actor": actors,
            "targets": st.lists(
                st.fixed_dictionaries({"type": st.just("user"), "id": st.text(min_size=1)}),
                max_size=2,
                unique_by=lambda target: target["id"],
            ),
            "occurred_at": st.datetimes(
                min_value=datetime(1900, 1, 1),
                max_value=datetime(2026, 1, 1),
                timezones=st.just(UTC),
            ),
            "event_id": st.uuids().map(str),
        },
    )
)


@pytest.fixture(scope="module")
def core(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuditCore]:
    yield from _core(request.param, request, tmp_path_factory)


def _core(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AuditCore]:
    if backend == "sqlite":
        settings_ = Settings(str(tmp_path_factory.mktemp("round_trip") / "events.sqlite"))
    else:
        from tests.conftest import fresh_postgres_store  # noqa: PLC0415

        settings_ = Settings(fresh_postgres_store(request.getfixturevalue("postgres_database")))
    with AuditCore(settings_, registry=REGISTRY) as audit:
        yield audit


def valid_id(draft: dict[str, Any]) -> UUID | None:
    try:
        return UUID(str(draft["event_id"]))
    except (KeyError, ValueError):
        return None


def with_fresh_id(draft: dict[str, Any]) -> dict[str, Any]:
    """The draft with a new event id if it has a valid one (examples must not share ids)."""
    return {**draft, "event_id": str(uuid4())} if valid_id(draft) else dict(draft)


def assert_stored_as_returned(audit: AuditCore, returned: AuditEvent) -> None:
    (stored,) = audit.app.recorder.select_events(returned.stream_id)
    assert stored.topic == returned.action
    assert stored.state == audit.app.mapper.to_stored_event(returned).state
    assert audit.event(returned.event_id, workspace_id=returned.workspace_id) == returned


@pytest.mark.parametrize("core", ["sqlite", "postgres"], indirect=True)
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(storable, storable, drafts))
def test_what_is_stored_is_what_record_and_dispatch_returned(
    core: AuditCore, draft: dict[str, Any]
) -> None:
    draft = with_fresh_id({"workspace_id": "acme", **draft})
    returned = outcome(lambda: core.record(**draft))
    if isinstance(returned, InvalidEventError):
        assert returned.problems
        assert all(location for location, _ in returned.problems), returned
        dispatched = outcome(lambda: core.dispatch(**with_fresh_id(draft)).result(timeout=30))
        assert str(dispatched) == str(returned)
        workspace = draft["workspace_id"]
        if (given_id := valid_id(draft)) and isinstance(workspace, str) and "\0" not in workspace:
            with pytest.raises(StreamNotFoundError):
                core.event(given_id, workspace_id=workspace)
        return
    assert_stored_as_returned(core, returned)
    # Re-recording it is an idempotent repeat, never "a reused id" (as NaN != NaN once made it).
    if valid_id(draft):
        assert core.record(**draft) == returned
    dispatched = core.dispatch(**with_fresh_id(draft)).result(timeout=30)
    assert_stored_as_returned(core, dispatched)


def outcome(write: Callable[[], AuditEvent]) -> AuditEvent | InvalidEventError:
    try:
        return write()
    except InvalidEventError as refused:
        return refused
