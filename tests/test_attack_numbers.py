"""Attack on recording over HTTP: an integer beyond 64 bits. orjson read it as a float, so
the API recorded ``1.2345678901234568e+29`` for ``123456789012345678901234567890`` — another
value than sent, with a 201 — where ``record()`` refuses it. Now both HTTP routes refuse it
(422, located), store nothing, and still take large floats and nesting as before."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from tests.conftest import fresh_postgres_store
from tests.test_api import Deployment, deploy

HUGE = b"123456789012345678901234567890"
WORKOS = (
    b'{"organization_id": "acme", "event": {"action": "user.signed_in",'
    b' "occurred_at": "2026-11-30T10:00:00Z", "actor": {"id": "u1", "type": "user", %s},'
    b' "targets": [], "context": {"location": "192.0.2.1"}, %s}}'
)


@pytest.fixture(scope="module")
def api(postgres_database: str, module_clickhouse_url: str) -> Iterator[Deployment]:
    settings = Settings(
        event_store=fresh_postgres_store(postgres_database), clickhouse=module_clickhouse_url
    )
    for deployed in deploy(settings, ApiConfig(live_keepalive=0.2)):
        deployed.audit.register_action(
            "user.signed_in", {"type": "object", "additionalProperties": True}
        )
        yield deployed


def _post(api: Deployment, path: str, body: bytes) -> tuple[int, dict[str, object]]:
    with api.client("acme", **{"content-type": "application/json"}) as client:
        answer = client.post(path, content=body)
    return answer.status_code, answer.json()


@pytest.mark.parametrize(
    ("path", "body", "where"),
    [
        ("/v1/events", b'{"action": "user.signed_in", "metadata": {"n": %s}}', "body.metadata.n"),
        (
            "/v1/events",
            b'{"action": "user.signed_in", "metadata": {"n": [-%s]}}',
            "body.metadata.n[0]",
        ),
        (
            "/v1/events",
            b'[{"action": "user.signed_in"}, {"action": "user.signed_in",'
            b' "actor": {"id": "u", "type": "user", "metadata": {"n": %s}}}]',
            "body[1].actor.metadata.n",
        ),
        (
            "/audit_logs/events",
            WORKOS % (b'"metadata": {"n": %s}', b'"metadata": {}'),
            "actor.metadata.n",
        ),
        ("/audit_logs/events", WORKOS % (b'"name": "U"', b'"metadata": {"n": %s}'), "metadata.n"),
    ],
)
def test_an_integer_beyond_64_bits_is_refused_not_rounded(
    api: Deployment, path: str, body: bytes, where: str
) -> None:
    before = api.stored()
    status, answer = _post(api, path, body % HUGE)
    assert status == 422, answer
    problems = answer["error"]["problems"]  # type: ignore[index]
    assert any(p["location"].endswith(where) and "64-bit" in p["message"] for p in problems), (
        problems
    )
    assert api.stored() == before


def test_large_floats_and_deep_nesting_still_behave(api: Deployment) -> None:
    status, answer = _post(
        api, "/v1/events", b'{"action": "user.signed_in", "metadata": {"f": 1e20, "g": -2.5e300}}'
    )
    assert status == 201, answer
    assert answer["items"][0]["metadata"] == {"f": 1e20, "g": -2.5e300}  # type: ignore[index]
    edge = b'{"action": "user.signed_in", "metadata": {"n": 18446744073709551615}}'
    status, answer = _post(api, "/v1/events", edge)
    assert status == 201, answer
    assert answer["items"][0]["metadata"] == {"n": 2**64 - 1}  # type: ignore[index]
    for depth in (500, 1000):  # past Python's recursion limit where orjson still reads it
        deep = b'{"action": "user.signed_in", "metadata": {"n": ' + b"[" * depth + HUGE
        status, answer = _post(api, "/v1/events", deep + b"]" * depth + b"}}")
        assert status in (400, 422), answer


@pytest.mark.parametrize("version", [b"true", b'"1"'])
def test_a_workos_version_must_be_an_integer(api: Deployment, version: bytes) -> None:
    """``true`` and ``"1"`` were recorded as schema version 1 (pydantic's lax integers)."""
    before = api.stored()
    status, answer = _post(
        api, "/audit_logs/events", WORKOS % (b'"name": "U"', b'"version": ' + version)
    )
    assert status == 422, answer
    assert api.stored() == before
    for valid in (b"1", b"1.0"):  # JSON Schema's integer: 1.0 is one
        body = WORKOS % (b'"name": "U"', b'"version": ' + valid)
        status, answer = _post(api, "/audit_logs/events", body)
        assert status == 201, answer
