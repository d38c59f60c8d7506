"""``/v1/retention`` through a real server: a key with the ``admin`` scope reads and sets its
own workspace's policy (recorded as an audit event); other keys are refused; bad bodies get a
plain 4xx; one workspace's policy leaves another's alone."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from auditcore import Settings
from auditcore.api.config import ApiConfig
from auditcore.events.envelope import Actor, ActorType
from auditcore.lifecycle.retention import Retention
from auditcore.projection.log import LogReader
from auditcore.tenancy.directory import Scope
from tests.test_api import Deployment, deploy


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Deployment]:
    deployment = deploy(pg_settings, ApiConfig())
    served = next(deployment)
    served.keys["globex_admin"] = served.directory.create_key("globex", "ops", [Scope.ADMIN]).token
    yield served
    next(deployment, None)


@pytest.mark.store_only
def test_an_admin_key_sets_its_own_workspace_policy(api: Deployment) -> None:
    with api.client("admin") as client:
        assert client.get("/v1/retention").json() == {
            "workspace_id": "acme", "days": None, "inherited": True, "archives": [],
        }  # fmt: skip
        response = client.put("/v1/retention", json={"days": 30})
        assert response.status_code == 200, response.text
        assert response.json()["days"] == 30
        assert not response.json()["inherited"]
    with api.client("globex_admin") as client:
        assert client.get("/v1/retention").json()["days"] is None  # acme's is not globex's
        assert client.put("/v1/retention", json={"days": 365}).json()["days"] == 365
    retention = Retention(api.audit)
    try:
        assert retention.policy("acme").days == 30
        assert retention.policy("globex").days == 365
        retention.set_policy(None, 90, actor=_system(), source="cli")  # the default
    finally:
        retention.close()
    with api.client("admin") as client:
        back = client.put("/v1/retention", json={"inherit": True}).json()
        assert (back["days"], back["inherited"]) == (90, True)
        # Refusals: plain 4xx, nothing changed.
        for body in ({"days": 0}, {"days": 36_501}, {"days": "30"}, {"weeks": 2}, [1], "x"):
            refused = client.put("/v1/retention", json=body)
            assert 400 <= refused.status_code < 500, (body, refused.text)
            assert "error" in refused.json()
        assert client.get("/v1/retention").json()["days"] == 90
    for key in ("acme", "acme_read", "acme_write"):  # no admin scope
        with api.client(key) as client:
            assert client.get("/v1/retention").status_code == 403
            assert client.put("/v1/retention", json={"days": 1}).status_code == 403
    with api.client(None) as client:
        assert client.get("/v1/retention").status_code == 401
    recorded = [
        (orjson.loads(event.state)["workspace_id"], orjson.loads(event.state)["actor"]["type"])
        for event in LogReader(api.audit.app).after(0, 1000)
        if event.action == "auditcore.retention.policy_set"
    ]
    assert recorded == [("acme", "api_key"), ("globex", "api_key"), ("acme", "api_key")]


def _system() -> Actor:
    return Actor(id="test", type=ActorType.SYSTEM)
