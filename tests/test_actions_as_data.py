"""Actions registered as data (JSON Schema in the control database), strict metadata keys and
whole-batch validation, on PostgreSQL and SQLite: what a registration promises, what a hostile
schema cannot do, and that one workspace's registrations never reach another."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from pydantic import BaseModel

from auditcore import AuditCore, Settings
from auditcore.errors import InvalidEventError, UnknownActionError
from auditcore.events.actions import ActionRegistry
from auditcore.events.json_schemas import MAX_SCHEMA_BYTES, SchemaError, compile_schema
from tests.apiserver import eventually
from tests.cli_run import AUDITCORE

pytestmark = pytest.mark.store_only

DEPLOY = {
    "type": "object",
    "properties": {
        "service": {"type": "string", "maxLength": 100},
        "commit": {"type": "string", "pattern": "^[0-9a-f]{7,40}$"},
        "canary": {"type": "boolean"},
    },
    "required": ["service", "commit"],
}
GOOD = {"service": "api", "commit": "abc1234"}


def problems(error: pytest.ExceptionInfo[InvalidEventError]) -> dict[str, str]:
    return dict(error.value.problems)


def test_a_registered_schema_validates_every_problem_and_refuses_undeclared_keys(
    audit: AuditCore,
) -> None:
    entry = audit.register_action("deploy.started", DEPLOY, registered_by="test")
    assert (entry.version, entry.created, entry.workspace_id) == (1, True, None)
    event = audit.record("deploy.started", workspace_id="acme", metadata=GOOD)
    assert (event.schema_version, event.metadata) == (1, GOOD)
    with pytest.raises(InvalidEventError) as refused:
        audit.record(
            "deploy.started",
            workspace_id="acme",
            metadata={"service": 7, "commit": "XYZ", "colour": "red", "ünïcødé 🔑": None},
        )
    found = problems(refused)
    assert "does not declare" in found["metadata.colour"]
    assert "does not declare" in found["metadata.ünïcødé 🔑"]
    assert "is not of type 'string'" in found["metadata.service"]
    assert "does not match" in found["metadata.commit"]
    # Opting in: the schema says so.
    audit.register_action("deploy.noted", {"additionalProperties": True}, registered_by="test")
    free = audit.record(
        "deploy.noted", workspace_id="acme", metadata={"anything": [1, {"a": None}]}
    )
    assert free.metadata == {"anything": [1, {"a": None}]}  # kept as given, nulls too
    # The registry's bounds still hold.
    with pytest.raises(InvalidEventError) as huge:
        audit.record("deploy.noted", workspace_id="acme", metadata={"x": "y" * 501})
    assert "metadata.x" in problems(huge)


def test_versions_are_immutable_and_the_newest_is_used(audit: AuditCore) -> None:
    assert audit.register_action("deploy.started", DEPLOY).version == 1
    again = audit.register_action("deploy.started", json.loads(json.dumps(DEPLOY)))
    assert (again.version, again.created) == (1, False)
    with pytest.raises(ValueError, match="already has a different schema version 1"):
        audit.register_action("deploy.started", {**DEPLOY, "required": ["service"]}, version=1)
    with pytest.raises(ValueError, match="the next schema version is 2, not 5"):
        audit.register_action("deploy.started", {**DEPLOY, "required": ["service"]}, version=5)
    v2 = {**DEPLOY, "required": ["service", "commit", "canary"]}
    assert audit.register_action("deploy.started", v2).version == 2
    with pytest.raises(InvalidEventError) as missing:
        audit.record("deploy.started", workspace_id="acme", metadata=GOOD)
    assert problems(missing) == {"metadata.canary": "Field required"}
    event = audit.record("deploy.started", workspace_id="acme", metadata={**GOOD, "canary": True})
    assert event.schema_version == 2
    # An older version on request (WorkOS's `version`), and one that does not exist.
    old = audit.record_many(
        [
            {
                "action": "deploy.started",
                "workspace_id": "acme",
                "metadata": GOOD,
                "schema_version": 1,
            }
        ]
    )
    assert old[0].schema_version == 1
    with pytest.raises(InvalidEventError, match="has no schema version 3; its newest is 2"):
        audit.record_many(
            [
                {
                    "action": "deploy.started",
                    "workspace_id": "a",
                    "metadata": GOOD,
                    "schema_version": 3,
                }
            ]
        )
    # Stored events read back with the version they were validated against.
    assert audit.event(old[0].event_id, workspace_id="acme").schema_version == 1
    assert audit.event(event.event_id, workspace_id="acme").schema_version == 2


def test_a_workspace_registration_never_reaches_another_workspace(audit: AuditCore) -> None:
    audit.register_action("deploy.started", DEPLOY, workspace_id="acme")
    assert audit.record("deploy.started", workspace_id="acme", metadata=GOOD).schema_version == 1
    with pytest.raises(UnknownActionError):
        audit.record("deploy.started", workspace_id="globex", metadata=GOOD)
    with pytest.raises(UnknownActionError):
        audit.dispatch("deploy.started", workspace_id="globex", metadata=GOOD)
    # globex registers its own, stricter schema under the same name: each keeps its own.
    audit.register_action(
        "deploy.started", {**DEPLOY, "required": ["canary"]}, workspace_id="globex"
    )
    with pytest.raises(InvalidEventError):
        audit.record("deploy.started", workspace_id="globex", metadata=GOOD)
    assert audit.record("deploy.started", workspace_id="acme", metadata=GOOD)
    # A registration for every workspace does not override a workspace's own.
    audit.register_action("deploy.started", {"additionalProperties": True})
    assert audit.record("deploy.started", workspace_id="initech", metadata={"x": 1})
    with pytest.raises(InvalidEventError):
        audit.record("deploy.started", workspace_id="acme", metadata={"x": 1})


def test_python_and_reserved_actions_cannot_be_replaced_by_data(audit: AuditCore) -> None:
    with pytest.raises(ValueError, match="registered in Python"):
        audit.register_action("incident.opened", {"additionalProperties": True})
    with pytest.raises(ValueError, match="auditcore's own"):
        audit.register_action("auditcore.workspace.created", {"additionalProperties": True})
    with pytest.raises(ValueError, match="dotted lowercase"):
        audit.register_action("Deploy Started", DEPLOY)


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ({"type": "object", "properties": {"x": {"pattern": "(?=a)b"}}}, "RE2"),
        ({"properties": {"x": {"pattern": r"(\w)\1"}}}, "RE2"),
        ({"$ref": "https://attacker.example/schema.json"}, "only local references"),
        ({"$ref": "#"}, "without end"),
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "without end"),
        ({"$schema": "http://json-schema.org/draft-04/schema#"}, "draft 2020-12"),
        ({"type": "strnig"}, "not a valid draft 2020-12 schema"),
        ({"properties": {f"k{i}": {"description": "x" * 100} for i in range(700)}}, "bytes"),
        (json.loads("{" + '"not":{' * 40 + "}" * 41), "deeper"),
        ({"properties": {"x": {"pattern": "a" * 1001}}}, "limit is 1000"),
        ([], "JSON object"),
    ],
)
def test_hostile_schemas_are_refused_with_a_reason(
    audit: AuditCore, schema: Any, says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        audit.register_action("deploy.started", schema)
    with pytest.raises(UnknownActionError):  # nothing was stored
        audit.record("deploy.started", workspace_id="acme", metadata={})


def test_patterns_run_in_linear_time() -> None:
    """(a+)+$ backtracks exponentially on Python's re: 30 'a's and a 'b' take minutes there.
    On RE2 a 500-character value (the bound on metadata strings) is checked at once."""
    check = compile_schema({"properties": {"x": {"pattern": "^(a+)+$"}}})
    started = time.monotonic()
    for length in (30, 100, 499):
        assert check.problems({"x": "a" * length + "b"})
    assert time.monotonic() - started < 1.0
    assert MAX_SCHEMA_BYTES == 64 * 1024
    with pytest.raises(SchemaError):
        compile_schema({"patternProperties": {"(?<=x)": {}}})


class Invited(BaseModel):  # no model_config: pydantic's default would drop extra keys
    email: str


class Noted(BaseModel):
    note: str


def test_undeclared_keys_are_refused_for_python_actions_unless_opted_in(audit: AuditCore) -> None:
    registry: ActionRegistry = audit.registry
    registry.register("member.invited_test", Invited)
    registry.register("member.noted_test", Noted, extra_keys=True)
    with pytest.raises(InvalidEventError) as refused:
        audit.record("member.invited_test", workspace_id="acme", metadata={"email": "a", "rol": 1})
    assert problems(refused) == {
        "metadata.rol": "undeclared key: the action's schema does not declare it"
    }
    with pytest.raises(InvalidEventError) as dispatched:  # the dispatcher's fast path too
        audit.dispatch("member.invited_test", workspace_id="acme", metadata={"email": "a", "x": 1})
    assert "metadata.x" in problems(dispatched)
    kept = audit.record("member.noted_test", workspace_id="acme", metadata={"note": "n", "x": 1})
    assert kept.metadata == {"note": "n", "x": 1}
    # Built-in actions too.
    with pytest.raises(InvalidEventError) as builtin:
        audit.record_many(
            [
                {
                    "action": "incident.comment_added",
                    "workspace_id": "acme",
                    "metadata": {"body": "x", "bdy": "y"},
                }
            ]
        )
    assert "[0].metadata.bdy" in problems(builtin)


def test_a_batch_is_validated_whole(audit: AuditCore) -> None:
    audit.register_action("deploy.started", DEPLOY)
    before = audit.app.recorder.max_notification_id() or 0
    drafts: list[dict[str, Any]] = [
        {"action": "deploy.started", "workspace_id": "acme", "metadata": GOOD},
        {"action": "deploy.started", "workspace_id": "acme", "metadata": {"service": "api"}},
        {"action": "deploy.strated", "workspace_id": "acme", "metadata": GOOD},
        {"action": "deploy.started", "workspace_id": "acme corp", "metadata": {**GOOD, "x": 1}},
    ]
    with pytest.raises(InvalidEventError) as refused:
        audit.record_many(drafts)
    found = problems(refused)
    assert set(found) == {"[1].metadata.commit", "[2].action", "[3].workspace_id", "[3].metadata.x"}
    assert "deploy.started" in found["[2].action"]  # the suggestion
    assert "3 events of the batch" in str(refused.value)
    assert (audit.app.recorder.max_notification_id() or 0) == before


def test_dispatch_stores_the_same_bytes_as_record_for_a_schema_action(audit: AuditCore) -> None:
    audit.register_action("deploy.started", DEPLOY)
    metadata = {"commit": "abc1234", "service": "Ünïcødé ✓", "canary": False}
    handle = audit.dispatch("deploy.started", workspace_id="acme", metadata=metadata)
    audit.flush()
    dispatched = handle.result()
    recorded = audit.record("deploy.started", workspace_id="acme", metadata=metadata)
    assert dispatched.metadata == recorded.metadata == dict(sorted(metadata.items()))
    assert audit.event(dispatched.event_id, workspace_id="acme").metadata == recorded.metadata
    with pytest.raises(InvalidEventError) as refused:  # the fast path refuses as record does
        audit.dispatch("deploy.started", workspace_id="acme", metadata={**metadata, "x": None})
    assert "metadata.x" in problems(refused)


def test_a_registration_is_seen_by_a_running_process(store_settings: Settings) -> None:
    """Another process registers (the CLI); this one, already running, records with it, then
    picks up a new version within seconds."""
    env = {"AUDITCORE_EVENT_STORE": store_settings.event_store, "PATH": "/usr/bin:/bin"}
    with AuditCore(store_settings) as audit:
        with pytest.raises(UnknownActionError):
            audit.record("deploy.started", workspace_id="acme", metadata=GOOD)
        _cli(env, store_settings, DEPLOY)
        # Asked again: the catalog is read again on a miss (at most once a second).
        recorded = eventually(lambda: _try(audit, GOOD))
        assert recorded.schema_version == 1
        _cli(env, store_settings, {**DEPLOY, "required": ["canary"]})
        newest = eventually(lambda: _refused(audit, GOOD), timeout=15)
        assert "metadata.canary: Field required" in newest


def _cli(env: dict[str, str], settings: Settings, schema: dict[str, Any]) -> None:
    done = subprocess.run(
        [AUDITCORE, "actions", "register", "deploy.started", "--schema", "-"],
        input=json.dumps(schema),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def _try(audit: AuditCore, metadata: dict[str, Any]) -> Any:
    try:
        return audit.record("deploy.started", workspace_id="acme", metadata=metadata)
    except UnknownActionError:
        return None


def _refused(audit: AuditCore, metadata: dict[str, Any]) -> str | None:
    try:
        audit.record("deploy.started", workspace_id="acme", metadata=metadata)
    except InvalidEventError as error:
        return str(error)
    return None
