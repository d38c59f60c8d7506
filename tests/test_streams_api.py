"""``/v1/streams`` through a real server that also runs the streamer (as ``auditcore serve``
does): an admin key configures its own workspace's streams, which deliver to a real webhook
receiver; credentials never come back; another workspace's admin sees none of them; bad
bodies get a plain 4xx; a dead-lettered stream shows in ``/readyz``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from auditcore import Settings
from auditcore.api.config import ApiConfig
from auditcore.tenancy.directory import Scope
from tests.apiserver import eventually
from tests.test_api import Deployment, deploy
from tests.webhook_receiver import SECRET, Answer, Receiver

pytestmark = pytest.mark.store_only


@pytest.fixture
def api(pg_settings: Settings) -> Iterator[Deployment]:
    deployment = deploy(pg_settings, ApiConfig(run_streams=True))
    served = next(deployment)
    served.keys["globex_admin"] = served.directory.create_key("globex", "ops", [Scope.ADMIN]).token
    yield served
    next(deployment, None)


def _refused_without_admin(api: Deployment, path: str, url: str) -> None:
    for key in ("acme", "acme_read", "acme_write"):
        with api.client(key) as client:
            assert client.get("/v1/streams").status_code == 403
            assert client.post("/v1/streams", json=_stream(url)).status_code == 403
            assert client.get(path).status_code == 403
    with api.client(None) as client:
        assert client.get("/v1/streams").status_code == 401


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


def _stream(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "siem",
        "settings": {"url": url, "secret": SECRET, "timeout_seconds": 2},
        "max_wait": 0.05,
        **extra,
    }


def _events(api: Deployment, count: int, actor: str = "user-1") -> None:
    with api.client("acme") as client:
        body = [
            {"action": "incident.comment_added", "actor": {"id": actor, "type": "user"},
             "metadata": {"body": f"c{n}"}}
            for n in range(count)
        ]  # fmt: skip
        assert client.post("/v1/events", json=body).status_code == 201


def test_an_admin_key_runs_its_own_workspace_streams(
    api: Deployment, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_body = SECRET.removeprefix("whsec_")
    answers: list[str] = []
    _events(api, 2)  # before the stream: not delivered (it starts from now)
    with api.client("admin") as admin:
        created = admin.post("/v1/streams", json=_stream(receiver.url))
        assert created.status_code == 201, created.text
        stream = created.json()
        assert stream["settings"] == {"url": receiver.url, "secret": "***", "timeout_seconds": 2.0}
        assert (stream["state"], stream["workspace_id"], stream["kind"]) == (
            "active", "acme", "webhook",
        )  # fmt: skip
        assert "position" not in stream
        path = f"/v1/streams/{stream['id']}"
        _events(api, 3)
        eventually(lambda: len(receiver.events()) == 3, timeout=60)
        assert admin.post("/v1/streams", json=_stream(receiver.url)).status_code == 409
        listed = admin.get("/v1/streams")
        shown = admin.get(path)
        paused = admin.post(f"{path}/pause")
        answers += [created.text, listed.text, shown.text, paused.text]
        assert [s["id"] for s in listed.json()] == [stream["id"]]
        assert shown.json()["delivered"] == 3
        assert paused.json()["state"] == "paused"
        _events(api, 1)
        replayed = admin.post(f"{path}/replay", json={"from": "1h"})
        answers.append(replayed.text)
        assert replayed.json()["state"] == "active"
        # The replay sends all 6 again, in order, after what was sent before (the event
        # recorded as the pause was asked for may or may not have gone out before it).
        eventually(lambda: len(receiver.events()) >= 3 + 6, timeout=60)
        tail = [e["event"]["metadata"]["body"] for e in receiver.events()[-6:]]
        assert tail == ["c0", "c1", "c0", "c1", "c2", "c0"]
        resumed = admin.post(f"{path}/resume")
        assert resumed.json()["state"] == "active"
        answers.append(resumed.text)
        ready = admin.get("/readyz")
        answers.append(ready.text)
        assert ready.json()["streams"]["active"] == 1
    with api.client("globex_admin") as other:
        assert other.get("/v1/streams").json() == []
        for method, suffix, body in (
            ("GET", "", None), ("POST", "/pause", None), ("POST", "/resume", None),
            ("POST", "/replay", {"from": "1h"}), ("DELETE", "", None),
        ):  # fmt: skip
            refused = other.request(method, path + suffix, json=body)
            assert refused.status_code == 404, (method, suffix, refused.text)
            answers.append(refused.text)
    _refused_without_admin(api, path, receiver.url)
    with api.client("admin") as admin:
        assert admin.delete(path).status_code == 204
        assert admin.get(path).status_code == 404
    assert receiver.bad_signatures == 0
    for text in [*answers, caplog.text]:
        assert secret_body not in text


BAD_BODIES: list[tuple[dict[str, Any], int, str]] = [
    ({"kind": "carrier-pigeon"}, 422, "invalid_stream"),
    ({"settings": {"url": "http://127.0.0.1:9", "secret": "nope"}}, 422, "invalid_stream"),
    ({"settings": {"url": "file:///etc/passwd", "secret": SECRET}}, 422, "invalid_stream"),
    ({"settings": {"url": "http://h", "secret": SECRET, "extra": 1}}, 422, "invalid_stream"),
    ({"settings": {"url": "h://", "secret": SECRET, "timeout_seconds": 0}}, 422, "invalid_stream"),
    ({"filters": {"nope": ["x"]}}, 422, "invalid_stream"),
    ({"filters": {"event_id": ["not-a-uuid"]}}, 422, "invalid_stream"),
    ({"filters": {"action": []}}, 422, "invalid_stream"),
    ({"format": "xml"}, 422, "invalid_stream"),
    ({"max_events": 0}, 400, "invalid_request"),
    ({"max_wait": -1}, 400, "invalid_request"),
    ({"max_bytes": 10**12}, 400, "invalid_request"),
    ({"from": "yesterday-ish"}, 400, "invalid_query"),
    ({"name": ""}, 400, "invalid_request"),
    ({"name": "x\u0000y"}, 422, "invalid_stream"),
    ({"name": "ü" * 101}, 400, "invalid_request"),
    ({"surprise": 1}, 400, "invalid_request"),
    ({"settings": "url"}, 400, "invalid_request"),
    # Credentials inside a URL would be shown wherever the stream is listed.
    (
        {"settings": {"url": "http://u:pw-zq7@127.0.0.1:9/h", "secret": SECRET}},
        422,
        "invalid_stream",
    ),
    (
        {
            "kind": "nats",
            "settings": {
                "servers": ["nats://127.0.0.1:4222", "nats://u:pw-zq7@h:4222"],
                "subject": "a",
            },
        },
        422,
        "invalid_stream",
    ),
    (
        {"kind": "splunk", "settings": {"url": "https://u:pw-zq7@splunk:8088", "token": "t"}},
        422,
        "invalid_stream",
    ),
]


def test_bad_stream_bodies_get_a_plain_4xx(api: Deployment) -> None:
    with api.client("admin") as admin:
        for change, status, kind in BAD_BODIES:
            body = _stream("http://127.0.0.1:9/hook") | change
            refused = admin.post("/v1/streams", json=body)
            assert refused.status_code == status, (change, refused.text)
            assert refused.json()["error"]["type"] == kind, change
            assert SECRET.removeprefix("whsec_") not in refused.text
            assert "pw-zq7" not in refused.text
        for bad in ([1], "x", None):
            assert 400 <= admin.post("/v1/streams", json=bad).status_code < 500
        assert admin.post("/v1/streams/ls_nope/replay", json={"from": "1h"}).status_code == 404
        assert admin.get("/v1/streams").json() == []


def test_a_dead_lettered_stream_shows_in_readyz(api: Deployment, receiver: Receiver) -> None:
    receiver.plan = lambda _: Answer(403)
    with api.client("admin") as admin:
        stream = admin.post("/v1/streams", json=_stream(receiver.url)).json()
        _events(api, 1)
        dead = eventually(
            lambda: (
                (s := admin.get(f"/v1/streams/{stream['id']}").json())["state"] == "dead_letter"
                and s
            ),
            timeout=30,
        )
        assert dead["last_error"] == "webhook 127.0.0.1 answered 403"
        ready = admin.get("/readyz").json()
    assert ready["streams"]["dead_letter"] == 1
    assert ready["streams"]["dead_lettered"] == [
        f"{stream['id']} (acme): webhook 127.0.0.1 answered 403"
    ]
    assert ready["ready"] is True  # the events wait in the store; the service is ready
    with api.client("globex_admin") as other:  # another workspace's admin: none of acme's
        elsewhere = other.get("/readyz")
    assert elsewhere.json()["streams"] == {
        "active": 0, "paused": 0, "dead_letter": 0, "dead_lettered": []
    }  # fmt: skip
    assert stream["id"] not in elsewhere.text
