"""No input makes the server fail: the issue's findings (dates and ages out of range, forged and
tampered cursors, odd numbers) each answer a plain, documented 4xx through a real server."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from uuid import uuid4

import pytest

from auditcore import Settings
from auditcore.api import ApiConfig
from auditcore.api.config import ResourceLimits
from auditcore.store.secrets import CURSOR_SECRET
from tests.conftest import fresh_postgres_store
from tests.test_api import INCIDENT, Deployment, deploy


@pytest.fixture(scope="module")
def hostile(postgres_database: str, chdb_dir: Path) -> Iterator[Deployment]:
    """One server for every case (no rate limit: the cases come fast)."""
    settings = Settings(
        fresh_postgres_store(postgres_database),
        f"chdb://{chdb_dir}?database=t_hostile_{uuid4().hex[:8]}",
    )
    config = ApiConfig(limits=ResourceLimits(rate_per_second=0, auth_failures=0))
    yield from deploy(settings, config)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


FORGED_CURSORS = {
    "id only": _b64(json.dumps({"id": 5}).encode()),
    # Deeper than Python's recursion limit (it was a RecursionError, a 500).
    "deeply nested": _b64(b"[" * 3000 + b"]" * 3000),
    "deeply nested object": _b64(b'{"t":' * 1500 + b"1" + b"}" * 1500),
    "random base64": _b64(bytes(range(256)) * 3),
    "not base64": "%%%%",
    "year 1": _b64(
        json.dumps(
            {"t": "0001-01-01T00:00:00+00:00", "id": "00000000-0000-0000-0000-000000000000"}
        ).encode()
    ),
    "year 9999": _b64(
        json.dumps(
            {"t": "9999-12-31T23:59:59+00:00", "id": "00000000-0000-0000-0000-000000000000"}
        ).encode()
    ),
    "wrong types": _b64(json.dumps({"t": 5, "id": [], "q": {}}).encode()),
    "a list": _b64(b"[1,2,3]"),
    "huge": "A" * 12_000,
}

EXTREME_MOMENTS = [
    "0001-01-01",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59+14:00",
    "9999-12-31T23:59:59-14:00",  # past year 9999 in UTC
    "0001-01-01T00:00:00+14:00",  # before year 1 in UTC
    "0001-01-01T00:00:00-14:00",
    "1899-12-31T23:59:59Z",
    "2300-01-02",
    "100000000d",  # further back than any date
    "999999999999w",
    "5000000d",
    "100000d",
]
MALFORMED_MOMENTS = [
    "0000-01-01",
    "2026-02-30",
    "1900-02-29",  # not a leap year
    "2026-01-01T24:00",
    "9999999999999w",  # more digits than any age
    "9" * 5000 + "d",
    " 7d",
    "7 d",
    "1e3d",
    "²d",
    "yesterday",
    "",
]

ROUTE_TIMES = [
    (route, name)
    for route in ("/v1/events", "/v1/events/export", "/v1/stats", "/v1/reports")
    for name in ("since", "until", "recorded_since", "recorded_until")
    if route in ("/v1/events", "/v1/events/export") or not name.startswith("recorded_")
]


def _query(route: str, name: str, moment: str) -> dict[str, str]:
    params = {name: moment}
    if route == "/v1/reports" and name == "until":
        params["since"] = "0001-01-01"
    return params


@pytest.mark.parametrize(("route", "name"), ROUTE_TIMES)
@pytest.mark.parametrize("moment", EXTREME_MOMENTS)
def test_moments_beyond_the_events_range_are_answered(
    hostile: Deployment, route: str, name: str, moment: str
) -> None:
    """Year 1, year 9999, an age of a million years: answered, never a 5xx. Only a range
    whose start is not before its end is refused (400 naming ``since``)."""
    with hostile.client() as client:
        response = client.get(route, params=_query(route, name, moment))
    if response.status_code == 400:
        assert response.json()["error"]["problems"][0] == {
            "location": f"query.{name.replace('until', 'since')}",
            "message": f"{name.replace('until', 'since')}: must not be later than "
            f"{name.replace('since', 'until')}",
        }, response.text
    else:
        assert response.status_code == 200, response.text


@pytest.mark.parametrize(("route", "name"), ROUTE_TIMES)
@pytest.mark.parametrize("moment", MALFORMED_MOMENTS, ids=lambda m: m[:20])
def test_malformed_moments_are_a_plain_400(
    hostile: Deployment, route: str, name: str, moment: str
) -> None:
    with hostile.client() as client:
        response = client.get(route, params=_query(route, name, moment))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["problems"][0]["location"] == f"query.{name}"


def test_a_range_beyond_the_events_range_selects_as_clamped(hostile: Deployment) -> None:
    """Since year 1 is "from the beginning", until year 9999 "to the end": no event lies
    outside 1900-2299, so clamping there changes no answer."""
    probe = {**INCIDENT, "actor": {"id": "clamp_probe", "type": "user"}}
    with hostile.client() as client:
        posted = client.post(
            "/v1/events",
            json=[
                {**probe, "occurred_at": at}
                for at in ("1900-01-01T00:00:00Z", "2020-01-01T00:00:00Z")
            ],
        )
        everything = set(posted.json()["ids"])
        hostile.projected("acme", 2, actor_id="clamp_probe")

        def ids(**params: str) -> set[str]:
            query = {"limit": "1000", "actor_id": "clamp_probe", **params}
            response = client.get("/v1/events", params=query)
            assert response.status_code == 200, response.text
            return {e["event_id"] for e in response.json()["items"]}

        assert ids(since="0001-01-01") == everything
        assert ids(since="100000000d") == everything
        assert (
            ids(since="0001-01-01T00:00:00+14:00", until="9999-12-31T23:59:59-14:00") == everything
        )
        assert ids(until="0001-01-01") == set()
        assert ids(since="9999-12-31") == set()
        assert ids(until="1900-01-01T00:00:00.000001Z") == ids(until="1900-01-01T00:00:01Z")
        assert len(ids(until="1900-01-01T00:00:01Z")) == 1


@pytest.mark.parametrize("route", ["/v1/events", "/v1/events/export"])
@pytest.mark.parametrize("forged", FORGED_CURSORS.values(), ids=FORGED_CURSORS.keys())
def test_forged_cursors_are_a_plain_400(hostile: Deployment, route: str, forged: str) -> None:
    with hostile.client() as client:
        response = client.get(route, params={"cursor": forged})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["problems"][0]["location"] == "query.cursor"


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_a_tampered_cursor_is_refused_and_a_genuine_one_pages_on(hostile: Deployment) -> None:
    """A cursor is signed: one whose payload was changed (here: its position, moved to skip
    ahead, well-formed in every other way) is a 400, not a silently different page; so is a
    genuine cursor of another workspace, or one cut short."""
    with hostile.client() as client, hostile.client("globex") as globex:
        for posting in (client, globex):
            created = posting.post("/v1/events", json=[INCIDENT, INCIDENT, INCIDENT])
            assert created.status_code == 201, created.text
        hostile.projected("acme", 3)
        hostile.projected("globex", 3)
        first = client.get("/v1/events", params={"limit": 1}).json()
        cursor = first["next_cursor"]
        second = client.get("/v1/events", params={"limit": 1, "cursor": cursor})
        assert second.status_code == 200, second.text
        body, signature = cursor.split(".")
        payload = json.loads(_unb64(body))
        moved = {**payload, "t": "2299-12-31T00:00:00+00:00"}
        forged = f"{_b64(json.dumps(moved, separators=(',', ':')).encode())}.{signature}"
        refused = client.get("/v1/events", params={"limit": 1, "cursor": forged})
        assert refused.status_code == 400, refused.text
        assert "not issued by this server" in refused.json()["error"]["message"]
        theirs = globex.get("/v1/events", params={"limit": 1}).json()["next_cursor"]
        assert globex.get("/v1/events", params={"cursor": theirs}).status_code == 200
        assert client.get("/v1/events", params={"cursor": theirs}).status_code == 400
        for cut in (cursor[:-1], cursor[:-3], body, f"{body}.", cursor + "A"):
            assert client.get("/v1/events", params={"cursor": cut}).status_code == 400, cut


def test_rotating_the_secret_retires_every_cursor(hostile: Deployment) -> None:
    """``auditcore keys rotate-secret``: cursors issued before are refused (plain 400)."""
    with hostile.client() as client:
        client.post("/v1/events", json=[INCIDENT, INCIDENT])
        hostile.projected("acme", 2)
        cursor = client.get("/v1/events", params={"limit": 1}).json()["next_cursor"]
        hostile.audit.secrets.rotate(CURSOR_SECRET)
        refused = client.get("/v1/events", params={"limit": 1, "cursor": cursor})
        assert refused.status_code == 400, refused.text
        fresh = client.get("/v1/events", params={"limit": 1}).json()["next_cursor"]
        assert fresh != cursor
        assert client.get("/v1/events", params={"cursor": fresh}).status_code == 200


def test_what_schemathesis_found_stays_fixed(hostile: Deployment) -> None:
    """Each a finding of the OpenAPI conformance run, kept as a plain regression test."""
    with hostile.client() as client:
        # An empty cursor is a malformed one, not "no cursor".
        assert client.get("/v1/events", params={"cursor": ""}).status_code == 400
        # Both methods of /v1/events, not just the first route's.
        options = client.options("/v1/events")
        assert options.status_code == 405
        assert set(options.headers["Allow"].split(", ")) == {"GET", "POST"}
        # What Allow names is what the path answers: HEAD is not (an attacker's find).
        assert client.head("/v1/events").status_code == 405
        # A time whose UTC falls outside Python's datetime is refused, not a 500.
        for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-23:59"):
            far = client.post("/v1/events", json={**INCIDENT, "occurred_at": moment})
            assert far.status_code == 422, far.text
        # A time in JSON is a string: a number of seconds is refused, not read as 1970.
        numeric = client.post("/v1/events", json={**INCIDENT, "occurred_at": 0})
        assert numeric.status_code == 422, numeric.text
        # A table of events has no current-state rows: not found, not a bad request.
        assert client.get("/v1/models/activity_hourly/rows").status_code == 404
        # A period starting after now is empty, not reversed.
        assert client.get("/v1/reports", params={"since": "3200-02-29"}).status_code == 200
        assert client.get("/v1/stats", params={"since": "3200-02-29"}).status_code == 200
        # A monitor whose events claim more downtime than a timedelta holds still reports.
        monitor = str(uuid4())
        huge = {
            "action": "monitor.recovered",
            "targets": [{"type": "monitor", "id": monitor}],
            "metadata": {"region": "eu-west", "downtime_seconds": 1e300},
        }
        assert client.post("/v1/events", json=huge).status_code == 201
        hostile.projected("acme", 1, action="monitor.recovered")
        report = client.get("/v1/reports", params={"since": "0001-01-01"})
        assert report.status_code == 200, report.text


def test_an_export_of_many_filter_values_is_recorded_within_the_metadata_bounds(
    hostile: Deployment,
) -> None:
    """The export's own audit event once broke the metadata bounds (71 keys > 50) and failed
    the export with a 422; now it keeps what fits and says how much it left out."""
    values = [f"user_{n}" for n in range(120)]
    with hostile.client() as client:
        export = client.get("/v1/events/export", params={"actor_id": values, "format": "jsonl"})
        assert export.status_code == 200, export.text
        recorded = hostile.projected("acme", 1, action="auditcore.export.created")
    metadata = next(e["metadata"] for e in recorded if e["metadata"].get("filters_omitted"))
    kept = metadata["filters"]["actor_id"]
    assert kept == values[: len(kept)]
    assert len(kept) + metadata["filters_omitted"] == 120


def test_no_redirect_is_built_from_the_host_header(hostile: Deployment) -> None:
    """A trailing slash once answered 307 with a Location built from the request's Host
    header (an open redirect through a cache or a proxy); now it is not found."""
    with hostile.client(Host="evil.example") as client:
        for path in ("/v1/events/", "/v1/models/", "/v1/stats/", "/v1/events/export/"):
            response = client.get(path)
            assert response.status_code == 404, (path, response.status_code)
            assert "location" not in response.headers
            assert response.headers["content-type"].startswith("application/json")


def test_an_export_refuses_paging_parameters(hostile: Deployment) -> None:
    """An export returns every matching event: a limit or a cursor would be silently ignored
    (or half-applied), so naming one is a 400 that says what the route takes."""
    with hostile.client() as client:
        for name, value in (("limit", "5"), ("cursor", "abc")):
            response = client.get("/v1/events/export", params={name: value})
            assert response.status_code == 400, (name, response.text)
            assert name in response.text
        assert client.get("/v1/events/export").status_code == 200
