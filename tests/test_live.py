"""The live tail: presence-gated, follows the store (not ClickHouse), filters per watcher,
sealed per workspace, resumable with Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from auditcore import AuditCore, Settings
from auditcore.api import ApiConfig
from auditcore.api.config import ResourceLimits
from auditcore.api.live import OVERFLOW, LiveHub, Watcher
from auditcore.projection.log import LogReader
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
        {"action": "monitor.paused", "metadata": {"reason": "n"}},
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

    async def offer_too_many() -> tuple[object, object, object, object]:
        loop = asyncio.get_running_loop()
        watcher = Watcher("acme", lambda _: True, 0, loop, budget=300)
        for position in range(1, 7):
            watcher.offer((position, b"x" * 100))
        big = Watcher("acme", lambda _: True, 0, loop, budget=300)
        big.offer((1, b"x" * 1000))
        big.offer((2, b"x"))
        return (
            await watcher.next(0.1),
            await watcher.next(0.1),
            await big.next(0.1),
            (await big.next(0.1)),
        )

    small, small_end, big, big_end = asyncio.run(offer_too_many())
    assert small == [(1, b"x" * 100), (2, b"x" * 100), (3, b"x" * 100)]
    assert small_end == OVERFLOW
    assert big == [(1, b"x" * 1000)]
    assert big_end == OVERFLOW


def _fill(api: Deployment, workspace_id: str, count: int) -> None:
    """``count`` events of one workspace, straight into the store."""
    for start in range(0, count, 1000):
        api.audit.record_many(
            [
                {**_titled(f"old {n}"), "workspace_id": workspace_id}
                for n in range(start, min(start + 1000, count))
            ]
        )


@pytest.fixture
def small_buffers(pg_settings: Settings) -> Iterator[Deployment]:
    yield from deploy(
        pg_settings,
        ApiConfig(
            run_processors=False,
            live_keepalive=0.2,
            limits=ResourceLimits(live_buffer_bytes=20_000, live_catch_up_readers=3),
        ),
    )


def test_far_behind_resumes_do_not_pull_the_shared_follower_back(
    small_buffers: Deployment,
) -> None:
    """``Last-Event-ID: 0`` over a store of 10,000 events, three times, by clients that do not
    read: each gets a catch-up reader of its own (stalled by its full buffer), the shared
    follower reads only new events, and another workspace's watcher is served meanwhile.
    When the clients read, they get every event once, in order, and join the follower."""
    api = small_buffers
    _fill(api, "globex", 10_000)
    watching = Tail(api, "acme", {})
    clients = [api.client("globex", **{"Last-Event-ID": "0"}) for _ in range(3)]
    stalled = [c.send(c.build_request("GET", "/v1/live"), stream=True) for c in clients]
    assert [r.status_code for r in stalled] == [200, 200, 200]
    eventually(lambda: api.hub.catching_up == 3)
    fresh = _post(api, "acme", _titled("while they catch up"))
    eventually(lambda: [e["event_id"] for e in watching.events] == fresh)
    assert api.hub.catching_up == 3  # still stalled: their clients read nothing yet
    assert api.hub.followed < 100  # the new event, not the store again

    for response, client in zip(stalled, clients, strict=True):
        response.close()
        client.close()
    resumed = Tail(api, "globex", {}, last_id="0")
    later = _post(api, "globex", _titled("after the store"))
    eventually(lambda: len(resumed.events) == 10_001, timeout=60)
    titles = [e["metadata"]["title"] for e in resumed.events]
    assert titles == [f"old {n}" for n in range(10_000)] + ["after the store"]
    assert resumed.events[-1]["event_id"] == later[0]
    assert len(set(resumed.ids)) == len(resumed.ids)
    eventually(lambda: api.hub.catching_up == 0)
    for tail in (watching, resumed):
        tail.close()


ODD_IDS: list[tuple[str | bytes, int]] = [
    ("²".encode("latin-1"), 400),
    ("9" * 5000, 400),
    ("9" * 25, 400),
    ("-1", 400),
    ("1 2", 400),
    ("0x10", 400),
    ("1e3", 400),
    ("", 200),  # no id: from now
    ("0", 200),  # from the start
    # A position of the client's choosing: bisecting with them would find each of its
    # events' store positions, which live ids hide.
    ("9" * 19, 400),
    ("7", 400),
    ("A" * 22, 400),  # the shape of an id, not one of this workspace's
]


@pytest.mark.parametrize(("last_id", "status"), ODD_IDS)
def test_odd_last_event_ids_are_a_plain_400_and_the_follower_lives_on(
    live_api: Deployment, last_id: str | bytes, status: int
) -> None:
    api = live_api
    watching = Tail(api, "acme", {})
    with api.client("acme") as client:
        request = client.build_request("GET", "/v1/live", headers={"Last-Event-ID": last_id})
        response = client.send(request, stream=True)
        assert response.status_code == status
        if status == 400:
            response.read()
            assert response.json()["error"]["problems"][0]["location"] == "query.Last-Event-ID"
        response.close()
    posted = _post(api, "acme", _titled("still following"))
    eventually(lambda: [e["event_id"] for e in watching.events] == posted)
    assert api.hub.following
    watching.close()


def test_spaces_around_a_last_event_id_are_not_part_of_it(live_api: Deployment) -> None:
    """(HTTP clients refuse to send them, so this one goes over a raw socket.)"""
    api = live_api
    host, port = api.url.removeprefix("http://").split(":")
    for value, status in [(b" 0 ", b"200"), (b"\t0\t", b"200"), (b"0 0", b"400")]:
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(
                b"GET /v1/live HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {api.keys['acme']}\r\n".encode()
                + b"Last-Event-ID:"
                + value
                + b"\r\n\r\n"
            )
            assert raw.recv(100).split()[1] == status


class _Writes:
    """Writes 60 rounds of one event per workspace (a and b), then notes the store's head."""

    def __init__(self, audit: AuditCore) -> None:
        self.audit = audit
        self.done = threading.Event()
        self.head = 0
        self.thread = threading.Thread(target=self._write)

    def _write(self) -> None:
        for n in range(60):
            self.audit.record_many(
                [
                    {**_titled(f"during {n}"), "workspace_id": "a"},
                    {**_titled(f"other {n}"), "workspace_id": "b"},
                ]
            )
        self.head = self.audit.app.recorder.max_notification_id() or 0
        self.done.set()

    def reached(self, watcher: Watcher) -> bool:
        """Everything written has been offered to the watcher, and it took all of it."""
        return self.done.is_set() and watcher.position >= self.head and watcher.buffered == 0


async def _watch(
    hub: LiveHub, writes: _Writes, start: int | None, delay: float, pace: float = 0.0
) -> tuple[int, list[int], int]:
    """Watch workspace a as a client would (resuming from its last id after an overflow) until
    every write has reached it: (where it began, positions seen, resumes)."""
    await asyncio.sleep(delay)
    loop = asyncio.get_running_loop()
    first: int | None = None
    seen: list[int] = []
    resumes = 0
    after: int | None = start
    while True:
        watcher = await asyncio.to_thread(hub.watch, "a", lambda _: True, after, loop)
        first = watcher.start if first is None else first
        while True:
            item = await watcher.next(0.5)
            if isinstance(item, list):
                seen += [position for position, _ in item]
                await asyncio.sleep(pace * len(item))  # a consumer slower than the writer
            elif item == OVERFLOW:
                break
            elif item is None and writes.reached(watcher):
                hub.leave(watcher)
                return first, seen, resumes
        hub.leave(watcher)
        resumes += 1
        after = seen[-1] if seen else after


def test_catch_up_hands_over_to_the_follower_without_gaps_or_repeats(audit: AuditCore) -> None:
    """Adversarial: events are written all along, in two workspaces, while watchers start
    from the beginning, from the middle, from now and from beyond the end; batches are tiny
    (many hand-over points) and buffers hold a few events (so watchers overflow and resume
    from their last id, as a client does). Each must see exactly its workspace's events after
    its start, once each, in order."""
    audit.record_many([{**_titled(f"before {n}"), "workspace_id": "a"} for n in range(120)])
    hub = LiveHub(
        audit.app,
        batch_size=7,
        catch_up_batch=5,
        budget=3_000,
        catch_up_readers=2,
        poll_interval=0.01,
    )
    writes = _Writes(audit)

    async def main() -> list[tuple[int, list[int], int]]:
        writes.thread.start()
        try:
            return await asyncio.gather(
                _watch(hub, writes, 0, 0),
                _watch(hub, writes, 60, 0.05),
                _watch(hub, writes, None, 0.1),
                _watch(hub, writes, 10**18, 0.2),
                *(_watch(hub, writes, None, 0.01 * n, pace=0.005 * n) for n in range(1, 7)),
            )
        finally:
            await asyncio.to_thread(writes.thread.join)

    try:
        results = asyncio.run(main())
    finally:
        hub.close()
    workspace_a = [
        logged.position
        for logged in LogReader(audit.app).after(0, 10_000)
        if json.loads(logged.state)["workspace_id"] == "a"
    ]
    assert len(workspace_a) == 180
    for first, seen, _ in results:
        assert seen == [p for p in workspace_a if p > first]
    assert any(resumes for _, _, resumes in results)  # overflow and resume were exercised


def test_live_ids_reveal_nothing_of_other_workspaces(live_api: Deployment) -> None:
    """A live id once was the store position, which counts every workspace's events: the gap
    between two of acme's ids told acme how much globex wrote. Now ids are opaque, and valid
    only in the workspace they were sent to."""
    api = live_api
    tail = Tail(api, "acme", {})
    first = _post(api, "acme", _titled("before"))
    for _ in range(3):
        _post(api, "globex", _titled("their business"))
    second = _post(api, "acme", _titled("after"))
    eventually(lambda: len(tail.events) == 2)
    tail.close()
    assert [e["event_id"] for e in tail.events] == first + second
    for ident in tail.ids:
        assert not ident.isdigit()
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", ident), ident
    # The same position in another workspace's stream is another id, and neither is accepted
    # there: globex cannot resume at (or learn from) acme's ids.
    with api.client("globex") as client:
        for ident in tail.ids:
            refused = client.get("/v1/live", headers={"Last-Event-ID": ident})
            assert refused.status_code == 400, refused.text
    # acme resumes at its own first id and gets exactly its second event.
    resumed = Tail(api, "acme", {}, last_id=tail.ids[0])
    eventually(lambda: resumed.events)
    resumed.close()
    assert [e["event_id"] for e in resumed.events] == second
