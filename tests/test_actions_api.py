"""Through a real server: registering an action's schema with an admin key (for its workspace
only), recording it, one 422 for every problem of a batch, and WorkOS Audit Logs' Create Event
posted exactly as WorkOS's documentation shows it, read back field by field."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from uuid import UUID

import httpx
import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.store.action_schemas import ActionCatalog
from auditcore.tenancy import Scope
from tests.apiserver import eventually
from tests.test_api import Deployment, deploy

DEPLOY = {
    "type": "object",
    "properties": {
        "service": {"type": "string"},
        "commit": {"type": "string", "pattern": "^[0-9a-f]{7,40}$"},
    },
    "required": ["service", "commit"],
}

# WorkOS's Create Event, as its API reference shows it (organization id, actor and target
# metadata, context.location, version); the organization is our workspace "acme".
WORKOS_EVENT: dict[str, Any] = {
    "organization_id": "acme",
    "event": {
        "action": "user.signed_in",
        "occurred_at": "2022-09-08T19:46:03.435Z",
        "version": 1,
        "actor": {
            "type": "user",
            "id": "user_TF4C5938",
            "name": "Jon Smith",
            "metadata": {"role": "admin"},
        },
        "targets": [
            {"type": "user", "id": "user_98432YHF", "name": "Jon Smith"},
            {"type": "team", "id": "team_J8YASKA2", "metadata": {"owner": "user_01GBTCQ2"}},
        ],
        "context": {"location": "1.1.1.1", "user_agent": "Chrome/104.0.0.0"},
        "metadata": {"extra": "data"},
    },
}
SIGNED_IN = {"type": "object", "properties": {"extra": {"type": "string"}}}


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Deployment]:
    for deployment in deploy(pg_settings, ApiConfig(max_batch=20)):
        deployment.keys["globex_admin"] = deployment.directory.create_key(
            "globex", "ops", [Scope.ADMIN]
        ).token
        yield deployment


def _problems(response: httpx.Response) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = response.json()["error"]["problems"]
    return problems


def test_an_admin_key_registers_a_schema_for_its_workspace_only(api: Deployment) -> None:
    body = {"schema": DEPLOY, "description": "A deploy began"}
    with api.client("acme") as writer:
        refused = writer.post("/v1/actions/deploy.started/schemas", json=body)
        assert refused.status_code == 403  # read/write is not admin
    with api.client("admin") as admin:
        created = admin.post("/v1/actions/deploy.started/schemas", json=body)
        assert created.status_code == 201, created.text
        assert created.json() | {"schema": None} == {
            "name": "deploy.started",
            "version": 1,
            "defined": "json_schema",
            "workspace_id": "acme",
            "schema": None,
            "display_template": "",
            "created": True,
        }
        same = admin.post("/v1/actions/deploy.started/schemas", json=body)
        assert (same.status_code, same.json()["created"]) == (200, False)
        for bad, says in [
            ({"schema": {"type": "nope"}}, "not a valid draft 2020-12 schema"),
            ({"schema": {"pattern": "(?!x)"}}, "RE2"),
            ({"schema": {"$ref": "http://169.254.169.254/"}}, "only local references"),
            ({"schema": DEPLOY, "version": 9}, "the next schema version is 2"),
        ]:
            response = admin.post("/v1/actions/deploy.started/schemas", json=bad)
            assert response.status_code == 422, response.text
            assert says in response.json()["error"]["message"]
        python = admin.post("/v1/actions/incident.opened/schemas", json={"schema": {}})
        assert python.status_code == 422
        bad_name = admin.post("/v1/actions/Not%20An%20Action/schemas", json={"schema": {}})
        assert bad_name.status_code == 422
    with api.client("acme") as writer:
        recorded = writer.post(
            "/v1/events",
            json={"action": "deploy.started", "metadata": {"service": "api", "commit": "abc1234"}},
        )
        assert recorded.status_code == 201, recorded.text
        listed = {(a["name"], a["defined"]) for a in writer.get("/v1/actions").json()}
        assert ("deploy.started", "json_schema") in listed
        assert ("incident.opened", "python") in listed
    with api.client("globex") as other:
        unknown = other.post(
            "/v1/events",
            json={"action": "deploy.started", "metadata": {"service": "api", "commit": "abc1234"}},
        )
        assert unknown.status_code == 422
        assert "not a registered action" in _problems(unknown)[0]["message"]
        assert "deploy.started" not in {a["name"] for a in other.get("/v1/actions").json()}
    # The registration is itself an audit event in acme.
    stored = api.audit.event(_registered_event(api), workspace_id="acme")
    assert stored.metadata == {"name": "deploy.started", "version": 1}


def _registered_event(api: Deployment) -> Any:
    for notification in api.audit.app.recorder.select_notifications(1, 100):
        if notification.topic == "auditcore.action_schema.registered":
            return api.audit.app.mapper.to_domain_event(notification).event_id
    raise AssertionError("no auditcore.action_schema.registered event")


def test_a_batch_answers_one_422_with_every_problem_of_every_event(api: Deployment) -> None:
    with api.client("admin") as admin:
        assert admin.post("/v1/actions/deploy.started/schemas", json={"schema": DEPLOY}).is_success
    stored = api.stored()
    batch = [
        {"action": "deploy.started", "metadata": {"service": "api", "commit": "abc1234"}},
        {"action": "deploy.started", "metadata": {"service": "api", "commit": "Z", "x": 1}},
        {"action": "deploy.started", "colour": "red", "metadata": {}},
        {"action": "incident.opend", "metadata": {}},
        {"action": "incident.opened", "metadata": {"title": "t", "severity": "high"}},
    ]
    with api.client("acme") as client:
        response = client.post("/v1/events", json=batch)
    assert response.status_code == 422, response.text
    found = {(p["index"], p["location"]) for p in _problems(response)}
    assert found == {
        (1, "body[1].metadata.commit"),
        (1, "body[1].metadata.x"),
        (2, "body[2].colour"),
        (3, "body[3].action"),
        (4, "body[4].metadata.severity"),
        (4, "body[4].metadata.service"),
    }
    assert [p["index"] for p in _problems(response)] == sorted(
        p["index"] for p in _problems(response)
    )
    assert api.stored() == stored


def test_workos_create_event_is_accepted_unchanged_and_read_back(api: Deployment) -> None:
    with api.client("admin") as admin:
        assert admin.post(
            "/v1/actions/user.signed_in/schemas", json={"schema": SIGNED_IN}
        ).is_success
    with api.client("acme", **{"Idempotency-Key": "9f1c4b2e-signin"}) as client:
        created = client.post("/audit_logs/events", json=WORKOS_EVENT)
        assert created.status_code == 201, created.text
        assert created.json()["success"] is True
        retried = client.post("/audit_logs/events", json=WORKOS_EVENT)
        assert retried.json()["id"] == created.json()["id"]
    with api.client("acme_read") as reader:
        event = reader.get(f"/v1/events/{created.json()['id']}").json()
    sent = WORKOS_EVENT["event"]
    assert event["workspace_id"] == WORKOS_EVENT["organization_id"]
    assert event["action"] == sent["action"]
    assert event["occurred_at"] == "2022-09-08T19:46:03.435000Z"
    assert event["schema_version"] == sent["version"]
    assert event["actor"] == sent["actor"]
    assert event["targets"] == [{"name": None, **target} for target in sent["targets"]]
    assert event["context"]["location"] == "1.1.1.1"
    assert event["context"]["ip"] == "1.1.1.1"
    assert event["context"]["user_agent"] == "Chrome/104.0.0.0"
    assert event["metadata"] == sent["metadata"]
    assert api.stored() == 2  # the registration's own event, and the event once
    # Projected into the read model too, with free-form types and metadata intact.
    (listed,) = api.projected("acme_read", 1, action="user.signed_in")
    assert listed["actor"] == sent["actor"]
    assert listed["targets"][1]["metadata"] == {"owner": "user_01GBTCQ2"}


def test_workos_events_are_checked_like_any_other(api: Deployment) -> None:
    with api.client("admin") as admin:
        assert admin.post(
            "/v1/actions/user.signed_in/schemas", json={"schema": SIGNED_IN}
        ).is_success
    stored = api.stored()
    sent = WORKOS_EVENT["event"]
    with api.client("acme") as client:
        other_org = client.post(
            "/audit_logs/events", json={**WORKOS_EVENT, "organization_id": "globex"}
        )
        assert other_org.status_code == 403
        iam = {**sent, "actor": {"type": "IAMUser", "id": "AIDA123", "metadata": {"arn": "x"}}}
        assert (
            client.post("/audit_logs/events", json={**WORKOS_EVENT, "event": iam}).status_code
            == 201
        )
        stored += 1
        bad = {
            **sent,
            "version": 2,
            "occurred_at": "2022-09-08T19:46:03",
            "actor": {"type": "user", "id": "u", "metadata": {"k" * 41: 1}},
            "targets": [{"type": "team", "id": "t", "colour": "red"}],
            "context": {"location": "Berlin", "user_agent": "x", "device": "phone"},
        }
        refused = client.post("/audit_logs/events", json={**WORKOS_EVENT, "event": bad})
        assert refused.status_code == 422, refused.text
        locations = {p["location"] for p in _problems(refused)}
        assert "body.event.context.device" in locations  # the body's own shape first
        bad.pop("context")
        refused = client.post("/audit_logs/events", json={**WORKOS_EVENT, "event": bad})
        locations = {p["location"] for p in _problems(refused)}
        assert {
            "body.event.version",
            "body.event.occurred_at",
            "body.event.targets[0].colour",
        } <= locations
        long_key = {**sent, "actor": {"type": "user", "id": "u", "metadata": {"k" * 41: 1}}}
        refused = client.post("/audit_logs/events", json={**WORKOS_EVENT, "event": long_key})
        (problem,) = _problems(refused)
        assert problem["location"].startswith("body.event.actor.metadata.kkkk")
        assert "41 characters" in problem["message"]
        undeclared = {**sent, "metadata": {"extra": "data", "secret": "x"}}
        refused = client.post("/audit_logs/events", json={**WORKOS_EVENT, "event": undeclared})
        assert {p["location"] for p in _problems(refused)} == {"body.event.metadata.secret"}
        location = {**sent, "context": {"location": "Berlin, DE"}}
        kept = client.post("/audit_logs/events", json={**WORKOS_EVENT, "event": location})
        assert kept.status_code == 201
        stored += 1
        event = api.audit.event(UUID(kept.json()["id"]), workspace_id="acme")
        assert (event.context.location, event.context.ip) == ("Berlin, DE", "127.0.0.1")
    assert api.stored() == stored


RELEASE = {
    "type": "object",
    "$defs": {"sha": {"type": "string", "pattern": "^[0-9a-f]{7,40}$"}},
    "properties": {"commit": {"$ref": "#/$defs/sha"}, "parent": {"$ref": "#/$defs/sha"}},
    "required": ["commit"],
}


def _resolve(document: dict[str, Any], reference: str) -> Any:
    node: Any = document
    for part in reference.removeprefix("#/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            yield from _references(value)
    elif isinstance(node, list):
        for item in node:
            yield from _references(item)


def _documented(api: Deployment, action: str) -> dict[str, Any] | None:
    with api.client(None) as anonymous:
        document: dict[str, Any] = anonymous.get("/openapi.json").json()
    for reference in _references(document):  # every $ref resolves inside the document
        _resolve(document, reference)
    variants = document["components"]["schemas"]["EventIn"]["oneOf"]
    found = [v for v in variants if v["properties"]["action"]["const"] == action]
    return {"document": document, "variant": found[0]} if found else None


def _requires(api: Deployment, action: str) -> list[str]:
    found = _documented(api, action)
    return [] if found is None else list(found["variant"]["required"])


def test_actions_registered_as_data_appear_in_the_openapi_document_without_a_restart(
    api: Deployment,
) -> None:
    assert _documented(api, "release.shipped") is None
    with api.client("admin") as admin:  # acme's own: not in the public document
        mine = admin.post("/v1/actions/release.shipped/schemas", json={"schema": RELEASE})
        assert mine.status_code == 201, mine.text
    assert _documented(api, "release.shipped") is None
    # What `auditcore actions register` does in another process: for every workspace.
    catalog = ActionCatalog(api.audit.settings)
    try:
        catalog.register("release.shipped", RELEASE, workspace_id=None, registered_by="ops")
        found = eventually(lambda: _documented(api, "release.shipped"), timeout=30)
        document, variant = found["document"], found["variant"]
        assert "metadata" in variant["required"]  # {} lacks `commit`
        metadata = variant["properties"]["metadata"]
        assert metadata["unevaluatedProperties"] is False  # undeclared keys are refused
        schema = _resolve(document, metadata["allOf"][0]["$ref"])
        commit = _resolve(document, schema["properties"]["commit"]["$ref"])
        assert commit["pattern"] == "^[0-9a-f]{7,40}$"
        assert "maxLength" in commit  # the registry's bounds, as for Python actions
        # A new version replaces it in the document, still without a restart.
        loose = {**RELEASE, "required": []}
        assert (
            catalog.register(
                "release.shipped", loose, workspace_id=None, registered_by="ops"
            ).version
            == 2
        )
        eventually(lambda: _requires(api, "release.shipped") == ["action"], timeout=30)
    finally:
        catalog.close()
    with api.client(None) as anonymous:  # the docs page still fetches nothing from elsewhere
        page = anonymous.get("/docs").text
        assert "http://" not in page
        assert "https://" not in page
