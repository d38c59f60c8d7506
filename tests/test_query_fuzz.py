"""Hypothesis fuzz of every query parameter of the GET routes (as /openapi.json declares them)
and of the live tail's ``Last-Event-ID``, through a real server: whatever the values, never a
5xx. And the documented time pattern: every text it matches is a time the server reads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.api.config import ResourceLimits
from auditcore.timespec import MOMENT_PATTERN, parse_moment
from tests.conftest import fresh_postgres_store
from tests.test_api import INCIDENT, Deployment, deploy

GET_ROUTES = [
    "/v1/events",
    "/v1/events/export",
    "/v1/stats",
    "/v1/reports",
    "/v1/models",
    "/v1/models/incidents/rows",
    "/v1/models/monitors/rows",
    "/v1/dead-letters",
    "/v1/checkpoints/latest",
    "/v1/checkpoints/consistency",
    "/v1/checkpoints/public-key",
    "/v1/live",
]
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
_EDGY = st.sampled_from(
    [
        "0001-01-01", "9999-12-31T23:59:59.999999Z", "0001-01-01T00:00+14:00",
        "9999-12-31T23:59-14:00", "999999999999w", "1e309", "-1", "0", "9" * 25, "9" * 5000,
        "NaN", "true", "", " ", "²", "%00", "\x00", "eyJpZCI6NX0", "[" * 200, "incident:",
        ":x", "00000000-0000-0000-0000-000000000000", "minute", "csv", "all",
    ]
)  # fmt: skip
VALUES = st.one_of(_TEXT, _EDGY, st.from_regex(MOMENT_PATTERN, fullmatch=True))


def _queries(names: list[str]) -> st.SearchStrategy[list[tuple[str, str]]]:
    """A few of the route's own parameters (so that one bad value does not hide the next
    behind a 400), now and then one it does not take."""
    name = st.one_of(st.sampled_from(names), st.just("colour")) if names else st.just("colour")
    return st.lists(st.tuples(name, VALUES), max_size=3)


@pytest.fixture(scope="module")
def fuzzed(postgres_database: str, chdb_dir: Path) -> Iterator[Deployment]:
    settings = Settings(
        fresh_postgres_store(postgres_database), f"chdb://{chdb_dir}?database=t_{uuid4().hex[:8]}"
    )
    config = ApiConfig(limits=ResourceLimits(rate_per_second=0, auth_failures=0))
    for deployment in deploy(settings, config):
        with deployment.client() as client:
            client.post("/v1/events", json=[INCIDENT] * 3)
        deployment.projected("acme", 3)
        yield deployment


@pytest.mark.parametrize("route", GET_ROUTES)
def test_no_query_makes_a_get_route_fail(fuzzed: Deployment, route: str) -> None:
    with fuzzed.client() as client:
        document = client.get("/openapi.json").json()["paths"]
        template = "/v1/models/{name}/rows" if "/rows" in route else route
        names = [
            parameter["name"]
            for parameter in document[template]["get"].get("parameters", [])
            if parameter["in"] == "query"
        ]

        @settings(
            max_examples=80,
            deadline=None,
            derandomize=True,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(_queries(names), st.one_of(st.none(), _EDGY, _TEXT))
        def check(query: list[tuple[str, str]], last_event_id: str | None) -> None:
            headers: dict[str, bytes] = {}
            if route == "/v1/live" and last_event_id is not None:
                # Header values are latin-1 text without line breaks (HTTP clients send no other).
                # and no spaces around them (h11 refuses to send those).
                value = re.sub(r"[^\x20-\x7e\xa0-\xff]", "", last_event_id).strip(" ")
                headers["Last-Event-ID"] = value.encode("latin-1")
            request = client.build_request("GET", route, params=query, headers=headers)
            response = client.send(request, stream=True)
            try:
                assert response.status_code < 500, (query, response.read())
            finally:
                response.close()

        check()


@given(st.from_regex(MOMENT_PATTERN, fullmatch=True))
def test_every_documented_time_is_read(text: str) -> None:
    assert parse_moment(text).tzinfo is not None
