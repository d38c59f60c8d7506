"""Attack on actions as data: a schema is hostile input from any workspace's admin key. One
with ``NaN`` or ``Infinity`` (which Python's JSON reader takes) was stored with ``null`` in
their place; read back it failed the metaschema, and every process's schema snapshot failed
with it — every workspace's JSON Schema actions answered 500. Now it is refused, and a stored
row that does not compile (edited behind our back) takes out only its own action."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.store.action_schemas import action_schemas
from auditcore.store.control import control_engine
from tests.conftest import fresh_postgres_store
from tests.test_api import Deployment, deploy


@pytest.fixture(scope="module")
def settings(postgres_database: str, module_clickhouse_url: str) -> Settings:
    return Settings(
        event_store=fresh_postgres_store(postgres_database), clickhouse=module_clickhouse_url
    )


@pytest.fixture(scope="module")
def api(settings: Settings) -> Iterator[Deployment]:
    yield from deploy(settings, ApiConfig(live_keepalive=0.2))


def _post(api: Deployment, key: str, action: str) -> int:
    with api.client(key) as client:
        return client.post("/v1/events", json={"action": action, "metadata": {}}).status_code


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_a_non_json_number_in_a_schema_is_refused(api: Deployment, number: bytes) -> None:
    api.audit.register_action("probe.shared", {"type": "object"})  # every workspace's
    body = b'{"schema": {"type": "object", "properties": {"x": {"maximum": ' + number + b"}}}}"
    with api.client("admin", **{"content-type": "application/json"}) as client:
        refused = client.post("/v1/actions/probe.poison/schemas", content=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["type"] == "invalid_schema"
    assert "not a JSON number" in refused.json()["error"]["message"]
    assert _post(api, "acme", "probe.poison") == 422  # nothing was stored
    assert _post(api, "globex", "probe.shared") == 201
    assert _post(api, "acme", "probe.shared") == 201


def test_a_stored_schema_that_no_longer_compiles_harms_only_its_own_action(
    api: Deployment, settings: Settings
) -> None:
    api.audit.register_action("probe.shared", {"type": "object"})
    assert _post(api, "globex", "probe.shared") == 201
    engine = control_engine(settings)
    try:
        with engine.begin() as connection:  # behind auditcore's back
            connection.execute(
                insert(action_schemas).values(
                    workspace_id="acme",
                    name="probe.poison",
                    version=1,
                    schema='{"properties":{"x":{"maximum":null}},"type":"object"}',
                    description="",
                    registered_at=datetime.now(UTC),
                    registered_by="sql",
                )
            )
    finally:
        engine.dispose()
    # The next look-up of an unknown name reloads the snapshot with the bad row in it.
    assert _post(api, "acme", "probe.poison") == 422
    assert _post(api, "globex", "probe.shared") == 201
    assert _post(api, "acme", "probe.shared") == 201
    with api.client("acme_read") as client:
        assert client.get("/v1/actions").status_code == 200
