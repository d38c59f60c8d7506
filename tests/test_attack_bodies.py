"""Attack on the body-taking routes: bytes that are not UTF-8, and JSON nested far past any
parser's depth. Each is a 400 of a documented type (the admin routes answered ``http_error``,
a type the API's error table does not have), and the server keeps answering."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from tests.conftest import fresh_postgres_store
from tests.test_api import Deployment, deploy

ROUTES = [
    ("admin", "POST", "/v1/actions/probe.thing/schemas"),
    ("admin", "POST", "/v1/erasures"),
    ("admin", "PUT", "/v1/retention"),
    ("acme", "POST", "/v1/events"),
    ("acme", "POST", "/audit_logs/events"),
]
BODIES = {
    "not UTF-8": b'{"schema": {"type": "object", "description": "\xff\xfe\xc3"}}',
    "latin-1 key": b'{"subject_id": "caf\xe9"}',
    "nested 100,000 deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.fixture(scope="module")
def api(
    postgres_database: str, module_clickhouse_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    settings = Settings(
        event_store=fresh_postgres_store(postgres_database), clickhouse=module_clickhouse_url
    )
    yield from deploy(settings, ApiConfig(live_keepalive=0.2))


@pytest.mark.parametrize(("key", "method", "path"), ROUTES)
def test_unreadable_bodies_are_a_documented_400(
    api: Deployment, key: str, method: str, path: str
) -> None:
    for what, body in BODIES.items():
        with api.client(key, **{"content-type": "application/json"}) as client:
            answer = client.request(method, path, content=body)
        assert answer.status_code == 400, (what, answer.text)
        assert answer.json()["error"]["type"] in {"invalid_json", "invalid_request"}, (
            what,
            answer.text,
        )
    with api.client("acme") as client:
        assert client.get("/v1/events").status_code == 200
