"""No caller can write events that pass for auditcore's own control plane, and every event
written through the API says which key wrote it, whatever actor its body names — in the read
API, its filters, exports, the live tail and the command line."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from auditcore import AuditCore, InvalidEventError, Settings
from auditcore.api import ApiConfig
from auditcore.events.actions import default_registry
from auditcore.events.factory import build_event
from tests.apiserver import eventually
from tests.test_api import Deployment, deploy
from tests.test_cli import run
from tests.test_live import Tail


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Deployment]:
    yield from deploy(pg_settings, ApiConfig(live_keepalive=0.2))


REVOKED = "auditcore.api_key.revoked"
FORGED = {"key_id": "key_0123456789ab", "name": "deploy"}


def _reserved(error: InvalidEventError) -> bool:
    return any(where.endswith("action") and "is reserved" in what for where, what in error.problems)


def test_reserved_actions_are_refused_on_every_library_path(audit: AuditCore) -> None:
    head = audit.app.recorder.max_notification_id()
    refusals = {
        "record": lambda: audit.record(REVOKED, workspace_id="acme", metadata=FORGED),
        "dispatch": lambda: audit.dispatch(REVOKED, workspace_id="acme", metadata=FORGED),
        "record_many": lambda: audit.record_many(
            [{"action": REVOKED, "workspace_id": "acme", "metadata": FORGED}]
        ),
        # Aggregates' events are built here too (a command naming an auditcore.* action).
        "aggregate": lambda: build_event(
            default_registry,
            action=REVOKED,
            workspace_id="acme",
            stream_id=uuid4(),
            version=2,
            metadata=FORGED,
            provenance={},
        ),
    }
    for way, attempt in refusals.items():
        with pytest.raises(InvalidEventError) as refused:
            attempt()
        assert _reserved(refused.value), (way, refused.value)
    # auditcore's own path takes its own actions, and nothing else.
    own = audit.record_control_event(REVOKED, workspace_id="acme", metadata=FORGED)
    assert own.action == REVOKED
    with pytest.raises(InvalidEventError, match="not one of auditcore's own"):
        audit.record_control_event("monitor.paused", workspace_id="acme", metadata={})
    assert audit.app.recorder.max_notification_id() == (head or 0) + 1


def test_reserved_actions_are_refused_by_the_command_line(
    store_settings: Settings, tmp_path: Path
) -> None:
    store = store_settings.event_store
    done = run(
        "record", REVOKED, "-w", "acme", "-m", json.dumps(FORGED),
        store=store, clickhouse=tmp_path / "ch", check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "is reserved" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    lines = tmp_path / "events.jsonl"
    good = {"action": "monitor.paused", "workspace_id": "acme", "metadata": {}}
    lines.write_text(
        json.dumps({"action": REVOKED, "workspace_id": "acme", "metadata": FORGED})
        + "\n"
        + json.dumps(good)
        + "\n"
    )
    done = run("import", str(lines), store=store, clickhouse=tmp_path / "ch", check=False)
    assert done.returncode == 2
    assert "line 1" in done.stderr
    assert "is reserved" in " ".join(done.stderr.split())
    with AuditCore(store_settings) as audit:
        stored = [n.topic for n in audit.app.recorder.select_notifications(start=1, limit=10)]
    assert stored == ["monitor.paused"]


def test_the_api_refuses_reserved_actions_and_names_the_writing_key(api: Deployment) -> None:
    with api.client("acme") as client:
        refused = client.post(
            "/v1/events",
            json=[
                {"action": "monitor.paused", "metadata": {}},
                {
                    "action": REVOKED,
                    "metadata": FORGED,
                    "actor": {"id": "system", "type": "system"},
                },
            ],
        )
        assert refused.status_code == 422, refused.text
        problems = refused.json()["error"]["problems"]
        assert [p["location"] for p in problems] == ["body[1].action"]
        assert "is reserved" in problems[0]["message"]
        # The key's id cannot be claimed by the body either.
        claimed = client.post(
            "/v1/events",
            json={"action": "monitor.paused", "context": {"api_key_id": "key_somebodyelse"}},
        )
        assert claimed.status_code == 422, claimed.text
        assert claimed.json()["error"]["problems"][0]["location"] == "body.context"
    assert api.stored() == 0

    # Two keys of one workspace write; the body names someone else as the actor.
    written: dict[str, list[str]] = {}
    for key in ("acme", "acme_write"):
        with api.client(key) as client:
            response = client.post(
                "/v1/events",
                json={
                    "action": "monitor.paused",
                    "metadata": {"reason": key},
                    "actor": {"id": "user_mallory", "type": "user"},
                    "context": {"ip": "203.0.113.9"},
                },
            )
            assert response.status_code == 201, response.text
            (event,) = response.json()["items"]
            written[key] = [event["event_id"], event["context"]["api_key_id"]]
            assert event["actor"]["id"] == "user_mallory"
            assert event["context"]["ip"] == "203.0.113.9"
    key_id, other_key_id = written["acme"][1], written["acme_write"][1]
    assert key_id != other_key_id
    assert key_id == _key_id(api, "acme")

    items = api.projected("acme_read", 2)
    assert {i["event_id"]: i["context"]["api_key_id"] for i in items} == dict(written.values())
    with api.client("acme_read") as client:
        mine = client.get("/v1/events", params={"api_key_id": key_id}).json()["items"]
        assert [e["event_id"] for e in mine] == [written["acme"][0]]
        by_id = client.get(f"/v1/events/{written['acme'][0]}").json()
        assert by_id["context"]["api_key_id"] == key_id
        exported = client.get(
            "/v1/events/export", params={"format": "csv", "api_key_id": other_key_id}
        )
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [(r["event_id"], r["api_key_id"]) for r in rows] == [
            (written["acme_write"][0], other_key_id)
        ]
        # (The CSV export above is an event too, recorded by auditcore: left out here.)
        lines = client.get(
            "/v1/events/export", params={"format": "jsonl", "action": "monitor.paused"}
        ).text.splitlines()
        assert {json.loads(line)["context"]["api_key_id"] for line in lines} == {
            key_id,
            other_key_id,
        }
    # Both exports were recorded by auditcore itself, with the exporting key named.
    exports = api.projected("acme_read", 2, action="auditcore.export.created")
    assert [e["context"]["api_key_id"] for e in exports] == [_key_id(api, "acme_read")] * 2


def _key_id(api: Deployment, key: str) -> str:
    principal = api.directory.authenticate(api.keys[key])
    assert principal is not None
    return principal.key_id


def test_the_live_tail_filters_by_writing_key(api: Deployment) -> None:
    writer = _key_id(api, "acme_write")
    tail = Tail(api, "acme_read", {"api_key_id": writer})
    try:
        # The other key's event first: the tail delivers in order, so it would come first.
        for key in ("acme", "acme_write"):
            with api.client(key) as client:
                body = {"action": "monitor.paused", "metadata": {"reason": key}}
                assert client.post("/v1/events", json=body).status_code == 201
        (event,) = eventually(lambda: tail.events)
        assert event["metadata"]["reason"] == "acme_write"
        assert event["context"]["api_key_id"] == writer
    finally:
        tail.close()


def test_the_command_line_filters_by_writing_key(tmp_path: Path) -> None:
    store = str(tmp_path / "events.sqlite")
    with AuditCore(Settings(store, f"chdb://{tmp_path / 'unused'}")) as audit:
        for key in ("key_aaaaaaaaaaaa", "key_bbbbbbbbbbbb"):
            audit.record("monitor.paused", workspace_id="acme", context={"api_key_id": key})
    run("project", store=store, clickhouse=tmp_path / "ch")
    found = run(
        "query", "-w", "acme", "--api-key", "key_bbbbbbbbbbbb", "-f", "json",
        store=store, clickhouse=tmp_path / "ch",
    )  # fmt: skip
    items = json.loads(found.stdout)["items"]
    assert [e["context"]["api_key_id"] for e in items] == ["key_bbbbbbbbbbbb"]
    exported = run(
        "export", "-w", "acme", "--filter", "api_key_id=key_aaaaaaaaaaaa", "-f", "csv",
        store=store, clickhouse=tmp_path / "ch",
    )  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert [r["api_key_id"] for r in rows] == ["key_aaaaaaaaaaaa"]
