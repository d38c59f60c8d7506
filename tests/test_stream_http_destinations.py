"""The Splunk HEC and Datadog Logs destinations against real HTTP receivers started here: the
exact headers and body, a batch complete and in order, Datadog's intake limits kept by
splitting, each fault (500, 429, 503, 400, 401/403, refused connection, timeout) classified
retryable or not, and the credentials in no error message."""

from __future__ import annotations

import time
from typing import Any

import orjson
import pytest

from auditcore.streams.base import Batch, DeliveryError, Destination
from auditcore.streams.destinations.datadog import DatadogLogsDestination, DatadogSettings
from auditcore.streams.destinations.splunk import (
    SplunkHecDestination,
    SplunkSettings,
    epoch_seconds,
)
from tests.stream_receivers import (
    HOSTILE,
    Receiver,
    http_receiver,
    make_batch,
    refused_port,
    silent_port,
)

TOKEN = "hec-token-5f1d2c3b-SECRET"
API_KEY = "dd-api-key-0123456789abcdef-SECRET"


def splunk(url: str, **settings: Any) -> SplunkHecDestination:
    return SplunkHecDestination(
        SplunkSettings.model_validate(
            {"url": url, "token": TOKEN, "host": "h1", "timeout_seconds": 0.5} | settings
        )
    )


def datadog(url: str, **settings: Any) -> DatadogLogsDestination:
    return DatadogLogsDestination(
        DatadogSettings.model_validate(
            {"base_url": url, "api_key": API_KEY, "hostname": "h1", "timeout_seconds": 0.5}
            | settings
        )
    )


def hec_events(receiver: Receiver) -> list[dict[str, Any]]:
    """Every HEC event object the receiver accepted, in order (one JSON object per line)."""
    return [
        orjson.loads(line)
        for request in receiver.requests
        if request.answer == receiver.success
        for line in request.body.split(b"\n")
        if line
    ]


def test_splunk_sends_the_batch_in_order_in_hec_event_format() -> None:
    batch = make_batch(range(7, 57))
    with http_receiver() as receiver:
        destination = splunk(receiver.url, index="audit", sourcetype="auditcore:ocsf")
        destination.deliver(batch)
        destination.close()
    [request] = receiver.requests
    assert request.path == "/services/collector/event"
    assert request.headers["Authorization"] == f"Splunk {TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    events = hec_events(receiver)
    assert [event["event"]["position"] for event in events] == list(range(7, 57))
    first = events[0]
    assert set(first) == {"time", "host", "source", "sourcetype", "index", "event", "fields"}
    assert first["time"] == pytest.approx(batch.events[0].occurred_at.timestamp(), abs=1e-6)
    assert (first["host"], first["source"], first["sourcetype"], first["index"]) == (
        "h1",
        "auditcore",
        "auditcore:ocsf",
        "audit",
    )
    assert first["event"]["text"] == HOSTILE
    assert first["fields"] == {
        "delivery_id": "stream-1:7",
        "position": "7",
        "workspace_id": "acme",
        "batch_id": batch.batch_id,
    }


def test_splunk_leaves_out_index_when_none_is_configured() -> None:
    with http_receiver() as receiver:
        splunk(receiver.url).deliver(make_batch(range(1, 3)))
    assert all("index" not in event for event in hec_events(receiver))


def test_hec_time_keeps_microseconds_and_moments_before_1970() -> None:
    batch = make_batch(range(1, 2))
    moment = batch.events[0].occurred_at
    assert epoch_seconds(moment) == pytest.approx(moment.timestamp(), abs=1e-6)
    early = moment.replace(year=1901)
    assert epoch_seconds(early) == pytest.approx(early.timestamp(), abs=1e-6)
    assert epoch_seconds(early) < 0


@pytest.mark.parametrize(
    ("status", "answer", "retryable"),
    [
        (500, '{"text":"Internal Error %s","code":8}', True),
        (503, '{"text":"Server is busy %s","code":9}', True),
        (429, "slow down %s", True),
        (408, "%s", True),
        (400, '{"text":"Invalid data format %s","code":6}', False),
        (401, '{"text":"Token is required %s","code":2}', False),
        (403, '{"text":"Invalid token %s","code":4}', False),
        (404, "not here %s", False),
        (413, "too large %s", False),
        # A 2xx is success only with HEC's code 0: a proxy's page is no delivery.
        (200, '{"text":"Server is busy %s","code":9}', True),
        (200, "<html>captive portal %s</html>", True),
        (204, "", True),
    ],
)
def test_splunk_faults_are_classified(status: int, answer: str, retryable: bool) -> None:
    with http_receiver() as receiver:
        # A receiver that echoes the credential: the error quotes what it said, redacted.
        receiver.script = [(status, answer.replace("%s", TOKEN).encode())]
        destination = splunk(receiver.url)
        with pytest.raises(DeliveryError) as raised:
            destination.deliver(make_batch(range(1, 4)))
        assert raised.value.retryable is retryable
        assert str(status) in str(raised.value)
        assert TOKEN not in str(raised.value)
        # The retry of the same batch goes through once the receiver takes it.
        destination.deliver(make_batch(range(1, 4)))
    assert [event["event"]["position"] for event in hec_events(receiver)] == [1, 2, 3]


def unreachable(make: Any, url: str) -> DeliveryError:
    destination: Destination = make(url)
    with pytest.raises(DeliveryError) as raised:
        destination.deliver(make_batch(range(1, 4)))
    destination.close()
    return raised.value


@pytest.mark.parametrize("make", [splunk, datadog])
def test_a_refused_connection_is_retryable_and_quotes_no_secret(make: Any) -> None:
    error = unreachable(make, f"http://user:{TOKEN}@127.0.0.1:{refused_port()}")
    assert error.retryable
    assert TOKEN not in str(error)
    assert API_KEY not in str(error)


@pytest.mark.parametrize("make", [splunk, datadog])
def test_a_silent_receiver_times_out_retryably(make: Any) -> None:
    with silent_port() as port:
        error = unreachable(make, f"http://127.0.0.1:{port}")
    assert error.retryable
    assert "timed out" in str(error)


def test_datadog_sends_intake_v2_entries_in_order() -> None:
    batch = make_batch(range(100, 140), workspace_id="ws:1")
    with http_receiver() as receiver:
        receiver.success = (202, b"{}")
        destination = datadog(receiver.url, ddtags="env:prod,team:sec", service="svc")
        destination.deliver(batch)
        destination.close()
    [request] = receiver.requests
    assert request.path == "/api/v2/logs"
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["Content-Type"] == "application/json"
    entries = orjson.loads(request.body)
    assert isinstance(entries, list)
    assert len(entries) == 40
    for event, entry in zip(batch.events, entries, strict=True):
        assert entry == {
            "ddsource": "auditcore",
            "service": "svc",
            "ddtags": "workspace:ws:1,stream:stream-1,env:prod,team:sec",
            "hostname": "h1",
            "message": orjson.dumps(event.payload).decode(),
            "delivery_id": event.delivery_id,
        }
        assert orjson.loads(entry["message"])["text"] == HOSTILE


def datadog_positions(receiver: Receiver) -> list[int]:
    return [
        orjson.loads(entry["message"])["position"]
        for request in receiver.requests
        if 200 <= request.status < 300
        for entry in orjson.loads(request.body)
    ]


def test_datadog_splits_a_batch_at_the_entry_limit() -> None:
    batch = make_batch(range(1, 2_502), text="x")
    with http_receiver() as receiver:
        datadog(receiver.url).deliver(batch)
    assert [len(orjson.loads(r.body)) for r in receiver.requests] == [1_000, 1_000, 501]
    assert datadog_positions(receiver) == list(range(1, 2_502))


def test_datadog_splits_a_batch_at_the_byte_limit() -> None:
    limit = 64 * 1024
    batch = make_batch(range(1, 201), text="é" * 900)
    with http_receiver() as receiver:
        datadog(receiver.url, max_request_bytes=limit).deliver(batch)
    sizes = [len(request.body) for request in receiver.requests]
    assert len(sizes) > 1
    assert max(sizes) <= limit
    # Each request was filled: the next entry would not have fitted.
    entry = len(receiver.requests[0].body) // len(orjson.loads(receiver.requests[0].body))
    assert all(size > limit - 2 * entry for size in sizes[:-1])
    assert datadog_positions(receiver) == list(range(1, 201))


def test_datadog_refuses_an_entry_over_one_megabyte_without_sending() -> None:
    batch = make_batch(range(1, 3), text="a" * (1024 * 1024))
    with http_receiver() as receiver:
        with pytest.raises(DeliveryError) as raised:
            datadog(receiver.url).deliver(batch)
        assert receiver.requests == []
    assert not raised.value.retryable
    assert "position 1" in str(raised.value)


def test_datadog_batch_is_delivered_only_when_every_request_is_accepted() -> None:
    batch = make_batch(range(1, 2_501), text="x")
    with http_receiver() as receiver:
        receiver.script = [(202, b"{}"), (503, b"unavailable")]
        destination = datadog(receiver.url)
        with pytest.raises(DeliveryError) as raised:
            destination.deliver(batch)
        assert raised.value.retryable
        assert datadog_positions(receiver) == list(range(1, 1_001))
        destination.deliver(batch)  # the retry sends every request again
    assert datadog_positions(receiver) == list(range(1, 1_001)) + list(range(1, 2_501))


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(500, True), (502, True), (429, True), (408, True), (400, False), (403, False), (413, False)],
)
def test_datadog_faults_are_classified(status: int, retryable: bool) -> None:
    with http_receiver() as receiver:
        receiver.script = [(status, f'{{"errors":["bad key {API_KEY}"]}}'.encode())]
        with pytest.raises(DeliveryError) as raised:
            datadog(receiver.url).deliver(make_batch(range(1, 4)))
    assert raised.value.retryable is retryable
    assert API_KEY not in str(raised.value)


def test_datadog_targets_the_site_intake_by_default() -> None:
    destination = datadog("http://unused", base_url=None, site="datadoghq.eu")
    assert destination._endpoint == "https://http-intake.logs.datadoghq.eu/api/v2/logs"


def test_settings_refuse_unknown_keys_and_hide_credentials() -> None:
    with pytest.raises(ValueError, match="extra"):
        SplunkSettings.model_validate({"url": "http://x", "token": "t", "tokn": "t"})
    assert TOKEN not in repr(SplunkSettings.model_validate({"url": "http://x", "token": TOKEN}))
    assert API_KEY not in repr(DatadogSettings(api_key=API_KEY))
    assert SplunkHecDestination.secret_fields == {"token"}
    assert DatadogLogsDestination.secret_fields == {"api_key"}


def test_an_empty_batch_sends_nothing() -> None:
    empty = Batch(stream_id="s", workspace_id="w", batch_id="b", events=[])
    with http_receiver() as receiver:
        splunk(receiver.url).deliver(empty)
        datadog(receiver.url).deliver(empty)
    assert receiver.requests == []


def test_a_slow_receiver_is_waited_for_and_one_too_slow_is_retried() -> None:
    batch = make_batch(range(1, 21))
    with http_receiver() as receiver:
        receiver.delay = 0.1  # slower than usual, within the timeout: delivered
        splunk(receiver.url, timeout_seconds=2.0).deliver(batch)
        receiver.delay = 1.0  # past the timeout: the sender cannot know whether it took it
        with pytest.raises(DeliveryError) as raised:
            splunk(receiver.url, timeout_seconds=0.3).deliver(batch)
        assert raised.value.retryable
        receiver.delay = 0.0
        splunk(receiver.url).deliver(batch)
        deadline = time.monotonic() + 30  # the slow answer's handler records it late
        while len(receiver.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    # At least once: every event arrived, in order, in each copy the receiver took.
    copies = [
        [orjson.loads(line)["event"]["position"] for line in request.body.split(b"\n")]
        for request in receiver.requests
    ]
    assert len(copies) == 3
    assert all(copy == list(range(1, 21)) for copy in copies)
