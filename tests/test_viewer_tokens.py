"""Viewer tokens through a real server: minted by an ``embed`` key, exchanged once, read-only,
narrowed by fixed filters on every route a session can call (the query cannot widen them),
ended by expiry and revocation (of the token or of its minting key), framable only by the
token's origins, and never reaching another workspace."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import uuid4

import httpx
import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.api.config import ResourceLimits
from auditcore.errors import ConfigurationError
from auditcore.tenancy import Scope
from tests.apiserver import eventually
from tests.test_api import Deployment, deploy
from tests.test_live import Tail

ALICE = {"id": "user_alice", "type": "user", "name": "Alice"}
BOB = {"id": "user_bob", "type": "user", "name": "Bob"}


def _event(actor: dict[str, str], title: str) -> dict[str, Any]:
    return {
        "action": "incident.opened",
        "actor": actor,
        "metadata": {"title": title, "severity": "sev2", "service": "api"},
    }


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Deployment]:
    config = ApiConfig(
        live_keepalive=0.2,
        limits=ResourceLimits(rate_per_second=0, auth_failures=0, revocation_check=0.2),
    )
    for deployment in deploy(pg_settings, config):
        directory = deployment.directory
        deployment.keys["acme_embed"] = directory.create_key(
            "acme", "portal", [Scope.READ, Scope.EMBED]
        ).token
        deployment.keys["acme_embed_only"] = directory.create_key(
            "acme", "embed-only", [Scope.EMBED]
        ).token
        deployment.keys["globex_embed"] = directory.create_key(
            "globex", "portal", [Scope.READ, Scope.EMBED]
        ).token
        yield deployment


def _mint(api: Deployment, key: str = "acme_embed", **body: Any) -> dict[str, Any]:
    with api.client(key) as client:
        response = client.post("/v1/viewer-tokens", json=body)
    assert response.status_code == 201, response.text
    minted: dict[str, Any] = response.json()
    return minted


def _session(api: Deployment, minted: dict[str, Any], name: str) -> str:
    link = minted["url"].split("#", 1)[1]
    with httpx.Client(base_url=api.url) as client:
        response = client.post("/v1/viewer-sessions", json={"link": link})
    assert response.status_code == 200, response.text
    session: str = response.json()["session"]
    api.keys[name] = session
    return session


def _seed(api: Deployment) -> dict[str, str]:
    """Alice's and Bob's events in acme, one of globex's; their ids."""
    ids = {}
    with api.client("acme") as client:
        for who, actor in (("alice", ALICE), ("bob", BOB)):
            response = client.post("/v1/events", json=_event(actor, f"{who}'s"))
            assert response.status_code == 201, response.text
            ids[who] = response.json()["ids"][0]
            ids[f"{who}_stream"] = response.json()["items"][0]["stream_id"]
    with api.client("globex") as client:
        response = client.post("/v1/events", json=_event(ALICE, "globex's"))
        ids["globex"] = response.json()["ids"][0]
    api.projected("acme_read", 2)
    api.projected("globex", 1)
    return ids


def test_a_link_works_once_and_its_fixed_filters_cannot_be_widened(api: Deployment) -> None:
    ids = _seed(api)
    minted = _mint(api, name="Ünïcode \u202e portal", filters={"actor_id": "user_alice"})
    # The secret travels only in the fragment: never in the path or query a server logs.
    page, link = minted["url"].split("#", 1)
    assert page == f"{api.url}/embed/{minted['id']}"
    assert link.startswith("avl_")
    assert link not in page
    _session(api, minted, "viewer")
    with httpx.Client(base_url=api.url) as client:
        again = client.post("/v1/viewer-sessions", json={"link": link})
        assert again.status_code == 401, again.text
        forged = client.post("/v1/viewer-sessions", json={"link": link[:-3] + "AAA"})
        assert forged.status_code == 401

    with api.client("viewer") as viewer:
        me = viewer.get("/v1/me").json()
        assert me["workspace_name"] == "acme"
        assert me["fixed_filters"] == {"actor_id": "user_alice"}
        assert me["scopes"] == ["view"]

        def actors(**params: str) -> set[str]:
            response = viewer.get("/v1/events", params=params)
            assert response.status_code == 200, response.text
            return {item["actor"]["id"] for item in response.json()["items"]}

        assert actors() == {"user_alice"}
        # Asking for Bob, or for both, narrows to nothing more than Alice's.
        assert actors(actor_id="user_bob") == set()
        assert actors(actor_id=["user_bob", "user_alice"]) == {"user_alice"}  # type: ignore[arg-type]
        assert actors(text="bob's") == set()
        assert viewer.get(f"/v1/events/{ids['bob']}").status_code == 404
        assert viewer.get(f"/v1/events/{ids['alice']}").status_code == 200
        assert viewer.get(f"/v1/streams/{ids['bob_stream']}/events").status_code == 404
        # Another workspace's event answers as an unknown one.
        assert viewer.get(f"/v1/events/{ids['globex']}").status_code == 404

        stats = viewer.get("/v1/stats", params={"group_by": "actor", "since": "1h"}).json()
        assert {b["key"] for b in stats["buckets"]} == {"user_alice"}
        stats = viewer.get(
            "/v1/stats", params={"group_by": "actor", "since": "3d", "interval": "hour"}
        ).json()
        assert {b["key"] for b in stats["buckets"]} == {"user_alice"}

        exported = viewer.get(
            "/v1/events/export", params={"format": "jsonl", "actor_id": "user_bob"}
        )
        assert exported.status_code == 200
        assert exported.text == ""
        exported = viewer.get("/v1/events/export", params={"format": "csv"})
        assert "user_alice" in exported.text
        assert "user_bob" not in exported.text

        # What cannot be narrowed by an actor is refused, never shown whole.
        assert viewer.get("/v1/models/incidents/rows").status_code == 403
        assert "incidents" not in {m["name"] for m in viewer.get("/v1/models").json()}
        assert viewer.get("/v1/reports", params={"since": "1d"}).status_code == 403
        assert viewer.get("/v1/dead-letters").status_code == 403
        assert viewer.get(f"/v1/events/{ids['alice']}/proof").status_code == 403
        assert viewer.get("/v1/events/export", params={"proof": "true"}).status_code == 403
        # Read-only.
        assert viewer.post("/v1/events", json=_event(ALICE, "forged")).status_code == 403
        assert viewer.post("/v1/viewer-tokens", json={}).status_code == 403


def test_the_live_tail_keeps_the_fixed_filters(api: Deployment) -> None:
    _seed(api)
    _session(api, _mint(api, filters={"actor_id": "user_alice"}), "viewer")
    tail = Tail(api, "viewer", {"actor_id": "user_bob"})
    wide = Tail(api, "viewer", {})
    try:
        with api.client("acme") as client:
            client.post("/v1/events", json=_event(BOB, "bob live"))
            client.post("/v1/events", json=_event(ALICE, "alice live"))
        eventually(lambda: wide.events)
        time.sleep(0.5)  # Bob's event came first: had it passed, it would be here by now.
        assert [e["actor"]["id"] for e in wide.events] == ["user_alice"]
        assert tail.events == []
    finally:
        tail.close()
        wide.close()


def test_expiry_and_revocation_end_access(api: Deployment) -> None:
    _seed(api)
    short = _mint(api, expires_in=2)
    _session(api, short, "short")
    with api.client("short") as viewer:
        assert viewer.get("/v1/events").status_code == 200
        eventually(lambda: viewer.get("/v1/events").status_code == 401, timeout=10)

    revoked = _mint(api)
    _session(api, revoked, "revoked")
    tail = Tail(api, "revoked", {})
    try:
        with api.client("acme_embed") as client:
            # Another workspace's token id, or a garbage one, answers as unknown.
            other = _mint(api, "globex_embed")
            assert client.delete(f"/v1/viewer-tokens/{other['id']}").status_code == 404
            assert client.delete("/v1/viewer-tokens/vt_' OR 1=1").status_code == 404
            response = client.delete(f"/v1/viewer-tokens/{revoked['id']}")
            assert response.status_code == 200
            assert response.json()["revoked_at"]
        with api.client("revoked") as viewer:
            assert viewer.get("/v1/events").status_code == 401
        # Its live stream is cut too.
        tail.thread.join(timeout=10)
        assert not tail.thread.is_alive()
    finally:
        tail.close()

    # Revoking the key that minted a token ends the token.
    by_key = _mint(api)
    _session(api, by_key, "by_key")
    unused = _mint(api)
    key_id = "key_" + api.keys["acme_embed"].split("_")[1]
    api.directory.revoke_key(key_id)
    with api.client("by_key") as viewer:
        assert viewer.get("/v1/events").status_code == 401
    with httpx.Client(base_url=api.url) as client:
        link = unused["url"].split("#", 1)[1]
        assert client.post("/v1/viewer-sessions", json={"link": link}).status_code == 401


def test_only_an_embed_key_mints_and_never_more_than_it_reads(api: Deployment) -> None:
    with api.client("acme_read") as client:
        assert client.post("/v1/viewer-tokens", json={}).status_code == 403
    with api.client("acme_embed_only") as client:
        response = client.post("/v1/viewer-tokens", json={})
        assert response.status_code == 403
        assert "read" in response.json()["error"]["message"]
    limited = api.directory.create_key(
        "acme", "limited", [Scope.READ, Scope.EMBED], ["audit_events:read"]
    )
    api.keys["limited"] = limited.token
    with api.client("limited") as client:
        assert (
            client.post("/v1/viewer-tokens", json={"read_models": ["incidents"]}).status_code == 403
        )
        minted = client.post("/v1/viewer-tokens", json={}).json()
        assert minted["entitlements"] == ["audit_events:read"]
    bad: list[dict[str, Any]] = [
        {"expires_in": 86_401},
        {"expires_in": 0},
        {"origins": ["javascript:alert(1)"]},
        {"origins": ["https://a.example; script-src *"]},
        {"origins": [f"https://{n}.example" for n in range(11)]},
        {"filters": {"nope": "x"}},
        {"filters": {"target": "no-colon"}},
        {"filters": {"actor_id": ""}},
        {"filters": {"actor_id": "x" * 257}},
        {"filters": {"stream_id": "not-a-uuid"}},
        {"read_models": ["no_such_model"]},
        {"name": ""},
        {"name": "x" * 101},
        {"unknown": 1},
    ]
    with api.client("acme_embed") as client:
        for body in bad:
            response = client.post("/v1/viewer-tokens", json=body)
            assert response.status_code == 400, (body, response.text)
            assert response.json()["error"]["message"]
        assert client.post("/v1/viewer-tokens", content=b"{").status_code in (400, 422)
        listed = client.get("/v1/viewer-tokens").json()
        # Nothing above was stored: only the limited key's token.
        assert [token["id"] for token in listed] == [minted["id"]]
    with pytest.raises(ConfigurationError):
        api.directory.create_key("acme", "sneaky", [Scope.VIEW])


def test_the_page_is_framable_only_by_the_tokens_origins(api: Deployment) -> None:
    minted = _mint(api, origins=["http://127.0.0.1:1", "https://app.example.com"])
    plain = _mint(api)

    def ancestors(path: str) -> str:
        with httpx.Client(base_url=api.url) as client:
            response = client.get(path)
        assert response.status_code == 200
        assert response.headers["Referrer-Policy"] == "no-referrer"
        policy = response.headers["Content-Security-Policy"]
        return policy.split("frame-ancestors ", 1)[1]

    assert ancestors(f"/embed/{minted['id']}") == "http://127.0.0.1:1 https://app.example.com"
    assert ancestors(f"/embed/{plain['id']}") == "'none'"
    assert ancestors(f"/embed/vt_{uuid4().hex[:12]}") == "'none'"
    assert ancestors("/") == "'none'"
    with api.client("acme_embed") as client:
        client.delete(f"/v1/viewer-tokens/{minted['id']}")
    assert ancestors(f"/embed/{minted['id']}") == "'none'"
