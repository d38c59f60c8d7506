"""Attack on erasure: personal data that reaches the store by a way the erasure tests did not
take — WorkOS's ingest, whose ``context.location`` is the actor's IP address and whose actor
and targets carry their own ``metadata`` (e-mail addresses) — must be sealed at rest and read
as erased afterwards on every path (store, get, list, search, exports)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.events.envelope import ERASED
from auditcore.lifecycle.master import new_master_key
from auditcore.projection.log import LogReader
from tests.apiserver import eventually
from tests.test_api import Deployment, deploy

SUBJECT, IP = "user_zoë", "203.0.113.77"
ACTOR_EMAIL, INVITEE_EMAIL, DEVICE_EMAIL = (
    "zoë.probe@example.com",
    "tara.invitee@example.com",
    "owner.of.device@example.com",
)
SECRETS = (IP, ACTOR_EMAIL, INVITEE_EMAIL, DEVICE_EMAIL)


@pytest.fixture
def api(pg_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Deployment]:
    monkeypatch.setenv("AUDITCORE_MASTER_KEY", new_master_key())
    monkeypatch.delenv("AUDITCORE_MASTER_KEY_FILE", raising=False)
    yield from deploy(pg_settings, ApiConfig(live_keepalive=0.2))


def _leaks(text: str) -> list[str]:
    return [s for s in SECRETS if s in text or json.dumps(s)[1:-1] in text]


def test_workos_location_and_actor_and_target_metadata_are_erased(api: Deployment) -> None:
    with api.client("admin") as client:
        schema = {"type": "object", "additionalProperties": True}
        assert client.post(
            "/v1/actions/user.signed_in/schemas", json={"schema": schema}
        ).status_code in (200, 201)
    body = {
        "organization_id": "acme",
        "event": {
            "action": "user.signed_in",
            "occurred_at": "2026-11-30T10:00:00Z",
            "actor": {
                "id": SUBJECT,
                "type": "user",
                "name": "Zoë",
                "metadata": {"email": ACTOR_EMAIL},
            },
            "targets": [
                {"id": "user_tara", "type": "user", "metadata": {"email": INVITEE_EMAIL}},
                {"id": "dev_1", "type": "device", "metadata": {"owner": DEVICE_EMAIL}},
            ],
            "context": {"location": IP, "user_agent": "Probe/1"},
            "metadata": {},
        },
    }
    with api.client("acme") as client:
        posted = client.post("/audit_logs/events", json=body)
    assert posted.status_code == 201, posted.text
    event_id: str = posted.json()["id"]

    # At rest nothing personal is in clear; with the keys it all reads back as given.
    stored = b"".join(e.state for e in LogReader(api.audit.app).after(0, 1000))
    assert _leaks(stored.decode()) == []
    event = api.audit.event(UUID(event_id), workspace_id="acme")
    assert (event.context.location, event.actor.metadata) == (IP, {"email": ACTOR_EMAIL})
    api.projected("acme_read", 1, action="user.signed_in")

    for subject in (SUBJECT, "user_tara"):
        with api.client("admin") as client:
            erased = client.post("/v1/erasures", json={"subject_id": subject})
        assert erased.status_code == 200, erased.text
        assert erased.json()["finished"], erased.text

    event = api.audit.event(UUID(event_id), workspace_id="acme")
    assert event.context.location == ERASED
    assert event.actor.metadata == {"email": ERASED}
    assert [t.metadata for t in event.targets] == [{"email": ERASED}, {"owner": ERASED}]

    def answers() -> dict[str, Any] | None:
        with api.client("acme_read") as client:
            got = {
                "get": client.get(f"/v1/events/{event_id}").text,
                "list": client.get("/v1/events", params={"action": "user.signed_in"}).text,
                "csv": client.get("/v1/events/export", params={"format": "csv"}).text,
                "jsonl": client.get("/v1/events/export", params={"format": "jsonl"}).text,
            }
            for secret in SECRETS:
                found = client.get("/v1/events", params={"text": secret}).json()["items"]
                got[f"search {secret}"] = json.dumps(found)
        return got if ERASED in got["get"] else None

    got = eventually(answers)
    assert {where: _leaks(text) for where, text in got.items() if _leaks(text)} == {}
    for secret in SECRETS:
        assert got[f"search {secret}"] == "[]", secret
