"""Revoking a key (or every key of a workspace) ends what it has open: live streams and exports
in flight, within seconds, even when the client has stopped reading."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.api.config import ResourceLimits
from auditcore.api.sessions import SessionKind
from auditcore.readmodel.queries import EventQuery
from tests.apiserver import eventually
from tests.test_api import INCIDENT, Deployment, deploy

EVENTS = 40_000
"""Enough that an export (~45 MB of CSV) cannot all sit in the sockets' buffers."""
WITHIN = 5.0
"""Seconds in which revocation must end what the key has open (the check runs each 0.5 s)."""


@pytest.fixture(scope="module")
def served(postgres_database: str, module_clickhouse_url: str) -> Iterator[Deployment]:
    from tests.conftest import fresh_postgres_store  # noqa: PLC0415

    settings = Settings(fresh_postgres_store(postgres_database), module_clickhouse_url)
    config = ApiConfig(
        live_keepalive=0.2, limits=ResourceLimits(revocation_check=0.5, rate_per_second=0)
    )
    yield from deploy(settings, config)


@pytest.fixture(scope="module")
def bulky(served: Deployment) -> Deployment:
    """acme holds EVENTS events with long descriptions, projected."""
    event = {**INCIDENT, "metadata": {**INCIDENT["metadata"], "description": "x" * 500}}
    for _ in range(EVENTS // 2000):
        served.audit.record_many([{**event, "workspace_id": "acme"}] * 2000)
    eventually(lambda: served.audit.reader("acme").count(EventQuery()) >= EVENTS, timeout=60)
    return served


class Stream:
    """A streamed GET whose body is read only as far as the test says."""

    def __init__(self, api: Deployment, token: str, path: str) -> None:
        self.client = httpx.Client(
            base_url=api.url, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        self.response = self.client.send(self.client.build_request("GET", path), stream=True)
        assert self.response.status_code == 200, self.response.read()
        self.chunks = self.response.iter_raw()

    def read_some(self) -> bytes:
        return next(self.chunks)

    def read_rest(self) -> tuple[bytes, Exception | None]:
        """Everything left, and the error that ended it (None: the body ended cleanly)."""
        rest = b""
        try:
            for chunk in self.chunks:
                rest += chunk
        except httpx.HTTPError as error:
            return rest, error
        return rest, None

    def close(self) -> None:
        self.response.close()
        self.client.close()


def _issue(api: Deployment, workspace_id: str) -> tuple[str, str]:
    from auditcore.tenancy import Scope  # noqa: PLC0415

    issued = api.directory.create_key(workspace_id, "doomed", [Scope.READ, Scope.WRITE])
    return issued.info.id, issued.token


def _open(api: Deployment, kind: SessionKind, workspace_id: str) -> int:
    assert api.services is not None
    return api.services.sessions.counts()[(kind, workspace_id)]


def test_revoking_a_key_ends_its_live_streams_and_exports_in_flight(bulky: Deployment) -> None:
    api = bulky
    key_id, token = _issue(api, "acme")
    _, bystander = _issue(api, "acme")
    live = Stream(api, token, "/v1/live")
    export = Stream(api, token, "/v1/events/export")
    other = Stream(api, bystander, "/v1/live")
    assert export.read_some().startswith(b"occurred_at,")
    # The client reads no further: the server's writes block on full socket buffers.
    time.sleep(1.0)
    assert _open(api, SessionKind.EXPORT, "acme") == 1
    assert _open(api, SessionKind.LIVE, "acme") == 2

    api.directory.revoke_key(key_id)  # what `auditcore keys revoke` does, from any process
    revoked_at = time.monotonic()
    eventually(lambda: _open(api, SessionKind.EXPORT, "acme") == 0, timeout=WITHIN)
    eventually(lambda: _open(api, SessionKind.LIVE, "acme") == 1, timeout=WITHIN)
    assert time.monotonic() - revoked_at < WITHIN

    # The live client is told why; the export is cut short, never a clean "complete" file.
    text, _ = live.read_rest()
    assert b"event: revoked" in text
    rest, error = export.read_rest()
    assert isinstance(error, httpx.RemoteProtocolError)
    assert rest.count(b"\n") < EVENTS
    # A key that was not revoked keeps its stream; the revoked one can start nothing new.
    assert _open(api, SessionKind.LIVE, "acme") == 1
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {token}"}) as gone:
        assert gone.get("/v1/live").status_code == 401
    for stream in (live, export, other):
        stream.close()


def test_revoking_a_workspace_ends_every_stream_of_its_keys(bulky: Deployment) -> None:
    api = bulky
    streams = [Stream(api, _issue(api, "globex")[1], "/v1/live") for _ in range(3)]
    reading = [threading.Thread(target=stream.read_rest) for stream in streams]
    for thread in reading:
        thread.start()
    eventually(lambda: _open(api, SessionKind.LIVE, "globex") == 3)
    api.directory.revoke_workspace_keys("globex")
    for thread in reading:
        thread.join(timeout=WITHIN)
        assert not thread.is_alive()
    # The server lets go of a session just after its client saw the stream end.
    eventually(lambda: _open(api, SessionKind.LIVE, "globex") == 0, timeout=WITHIN)
    for stream in streams:
        stream.close()
