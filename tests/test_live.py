"""The live tail: presence-gated, follows the store (not ClickHouse), filters per watcher,
sealed per workspace, resumable with Last-Event-ID."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from tests.apiserver import eventually
from tests.test_api import INCIDENT, Deployment, deploy


@pytest.fixture
def live_api(store_settings: Settings) -> Iterator[Deployment]:
    # Processors off: the live tail must not depend on ClickHouse at all.
    yield from deploy(store_settings, ApiConfig(run_processors=False, live_keepalive=0.2))


class Tail:
    """Reads one SSE connection in a thread, collecting its events."""

    def __init__(
        self, api: Deployment, key: str, params: dict[str, Any], last_id: str | None = None
    ) -> None:
        headers = {"Last-Event-ID": last_id} if last_id else {}
        self.client = api.client(key, **headers)
        self.events: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.connected = threading.Event()
        self.stop = threading.Event()
        self.params = params
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.connected.wait(10)

    def _read(self) -> None:
        try:
            with self.client.stream(
                "GET", "/v1/live", params=self.params, timeout=None
            ) as response:
                assert response.status_code == 200
                self.connected.set()
                kind, ident = None, None
                for line in response.iter_lines():
                    if self.stop.is_set():
                        return
                    if line.startswith("event: "):
                        kind = line.removeprefix("event: ")
                    elif line.startswith("id: "):
                        ident = line.removeprefix("id: ")
                    elif line.startswith("data: ") and kind == "audit_event":
                        self.events.append(json.loads(line.removeprefix("data: ")))
                        self.ids.append(str(ident))
        except (httpx.ReadError, httpx.RemoteProtocolError, RuntimeError):
            pass

    def close(self) -> None:
        """Hang up (the reader notices at the next keep-alive) and wait for it."""
        self.stop.set()
        self.thread.join(timeout=10)
        self.client.close()


def _post(api: Deployment, key: str, *events: dict[str, Any]) -> list[str]:
    with api.client(key) as client:
        response = client.post("/v1/events", json=list(events))
        assert response.status_code == 201, response.text
        ids: list[str] = response.json()["ids"]
        return ids


def _titled(title: str, severity: str = "sev1") -> dict[str, Any]:
    return {**INCIDENT, "metadata": {**INCIDENT["metadata"], "title": title, "severity": severity}}


def test_live_tail_is_presence_gated_filtered_and_sealed(live_api: Deployment) -> None:
    api = live_api
    assert not api.hub.following
    everything = Tail(api, "acme", {})
    sev1 = Tail(api, "acme", {"action": "incident.opened", "text": "database"})
    globex = Tail(api, "globex", {})
    assert api.hub.following
    assert api.hub.watchers == 3

    wanted = _post(api, "acme", _titled("database down"))
    other = _post(
        api,
        "acme",
        _titled("cache slow"),
        {"action": "auditcore.workspace.created", "metadata": {"name": "n"}},
    )
    foreign = _post(api, "globex", _titled("database down"))

    eventually(lambda: len(everything.events) == 3 and len(globex.events) == 1)
    assert [e["event_id"] for e in everything.events] == wanted + other
    eventually(lambda: sev1.events)
    assert [e["event_id"] for e in sev1.events] == wanted
    assert [e["event_id"] for e in globex.events] == foreign
    assert all(e["workspace_id"] == "acme" for e in everything.events)

    for tail in (everything, sev1, globex):
        tail.close()
    # Nobody watching: the follower stops.
    eventually(lambda: not api.hub.following and api.hub.watchers == 0)


def test_reconnecting_with_last_event_id_resumes_without_gaps(live_api: Deployment) -> None:
    api = live_api
    tail = Tail(api, "acme", {})
    first = _post(api, "acme", _titled("one"))
    eventually(lambda: tail.events)
    last_id = tail.ids[-1]
    tail.close()
    missed = _post(api, "acme", _titled("two"), _titled("three"))
    resumed = Tail(api, "acme", {}, last_id=last_id)
    later = _post(api, "acme", _titled("four"))
    eventually(lambda: len(resumed.events) == 3)
    assert [e["event_id"] for e in resumed.events] == missed + later
    assert first[0] not in {e["event_id"] for e in resumed.events}
    resumed.close()


def test_a_watcher_that_falls_behind_is_told_to_reconnect() -> None:
    """Bounded memory per watcher, in bytes: past its budget the shared follower ends it with
    ``overflow`` (the stream sends ``event: overflow``) and offers it nothing more, so it
    resumes from its last id instead. One event larger than the whole budget still passes
    when nothing else is queued (the watcher is never stuck)."""
    import asyncio  # noqa: PLC0415

    from auditcore.api.live import OVERFLOW, Watcher  # noqa: PLC0415

    async def offer_too_many() -> tuple[list[object], list[object]]:
        loop = asyncio.get_running_loop()
        watcher = Watcher("acme", lambda _: True, 0, loop, budget=300)
        for position in range(1, 7):
            watcher.offer((position, b"x" * 100))
        await asyncio.sleep(0)
        small = [await watcher.next(0.1) for _ in range(watcher.queue.qsize())]
        big = Watcher("acme", lambda _: True, 0, loop, budget=300)
        big.offer((1, b"x" * 1000))
        big.offer((2, b"x"))
        await asyncio.sleep(0)
        return small, [await big.next(0.1) for _ in range(big.queue.qsize())]

    small, big = asyncio.run(offer_too_many())
    assert small == [(1, b"x" * 100), (2, b"x" * 100), (3, b"x" * 100), OVERFLOW]
    assert big == [(1, b"x" * 1000), OVERFLOW]
