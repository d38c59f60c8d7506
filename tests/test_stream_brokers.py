"""The NATS JetStream and Redis Streams destinations against the real brokers on this machine
(127.0.0.1:4222 with JetStream, 127.0.0.1:6379): a batch arrives complete and in order with its
delivery ids, a retried (or differently cut) batch stores nothing twice, faults are classified
retryable or not, and credentials appear in no error message. Each test has its own JetStream
stream (and subject) or Redis key, removed at the end."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import nats
import orjson
import pytest
import redis

from auditcore.streams.base import DeliveryError
from auditcore.streams.destinations.nats import NatsJetStreamDestination, NatsSettings
from auditcore.streams.destinations.redis_streams import (
    POSITIONS_SUFFIX,
    RedisStreamsDestination,
    RedisStreamsSettings,
)
from tests.stream_receivers import HOSTILE, make_batch, refused_port, silent_port

NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"
SECRET = "broker-password-77e1-SECRET"


# --- NATS JetStream --------------------------------------------------------------------------


async def _manage(action: Any) -> Any:
    client = await nats.connect(NATS_URL, connect_timeout=5)
    try:
        return await action(client.jetstream())
    finally:
        await client.close()


def jetstream(action: Any) -> Any:
    """Run ``action(jetstream_context)`` on a connection of the test's own."""
    return asyncio.run(_manage(action))


@pytest.fixture
def nats_stream() -> Iterator[tuple[str, str]]:
    """A JetStream stream of this test's own and the subject it captures."""
    name = f"auditcore_test_{uuid.uuid4().hex[:12]}"
    subject = f"auditcore.test.{name}"

    async def create(js: Any) -> None:
        await js.add_stream(name=name, subjects=[subject], duplicate_window=120.0)

    jetstream(create)
    yield name, subject

    async def delete(js: Any) -> None:
        await js.delete_stream(name)

    jetstream(delete)


def stored(stream: str) -> list[tuple[str, dict[str, Any]]]:
    """Every message of ``stream`` in order: its ``Nats-Msg-Id`` and its payload."""

    async def read(js: Any) -> list[tuple[str, dict[str, Any]]]:
        info = await js.stream_info(stream)
        messages: list[tuple[str, dict[str, Any]]] = []
        if not info.state.messages:
            return messages
        for sequence in range(info.state.first_seq, info.state.last_seq + 1):
            message = await js.get_msg(stream, sequence)
            messages.append((message.headers["Nats-Msg-Id"], orjson.loads(message.data)))
        return messages

    result: list[tuple[str, dict[str, Any]]] = jetstream(read)
    return result


def nats_destination(subject: str, **settings: Any) -> NatsJetStreamDestination:
    return NatsJetStreamDestination(
        NatsSettings.model_validate(
            {"servers": [NATS_URL], "subject": subject, "timeout_seconds": 2.0} | settings
        )
    )


def test_nats_publishes_the_batch_in_order_with_delivery_ids(
    nats_stream: tuple[str, str],
) -> None:
    name, subject = nats_stream
    batch = make_batch(range(10, 510))
    destination = nats_destination(subject, stream=name)
    try:
        destination.deliver(batch)
        destination.deliver(make_batch(range(510, 520)))  # the connection is kept
    finally:
        destination.close()
    messages = stored(name)
    assert [payload["position"] for _, payload in messages] == list(range(10, 520))
    assert [msg_id for msg_id, _ in messages[:3]] == ["stream-1:10", "stream-1:11", "stream-1:12"]
    assert messages[0][1]["text"] == HOSTILE

    async def headers(js: Any) -> Any:
        return (await js.get_msg(name, 1)).headers

    assert jetstream(headers) == {
        "Nats-Msg-Id": "stream-1:10",
        "Auditcore-Position": "10",
        "Auditcore-Workspace": "acme",
        "Auditcore-Batch": batch.batch_id,
        "Nats-Expected-Stream": name,
    }


def test_nats_retried_batches_store_nothing_twice(nats_stream: tuple[str, str]) -> None:
    name, subject = nats_stream
    destination = nats_destination(subject)
    try:
        destination.deliver(make_batch(range(1, 101)))
        destination.deliver(make_batch(range(1, 101)))  # the same batch, retried
        # After a restart the streamer may cut the batches differently: same delivery ids.
        destination.deliver(make_batch(range(50, 151), batch_id="recut"))
    finally:
        destination.close()
    messages = stored(name)
    assert [payload["position"] for _, payload in messages] == list(range(1, 151))
    assert len({msg_id for msg_id, _ in messages}) == 150


def test_nats_without_a_stream_for_the_subject_is_not_retryable_then_recovers(
    nats_stream: tuple[str, str],
) -> None:
    name, subject = nats_stream
    destination = nats_destination(subject + ".uncaptured")
    try:
        with pytest.raises(DeliveryError) as raised:
            destination.deliver(make_batch(range(1, 4)))
        assert not raised.value.retryable
        assert "no JetStream stream" in str(raised.value)
    finally:
        destination.close()
    # A subject another stream captures, with this stream expected: refused, not misfiled.
    destination = nats_destination(subject, stream="some_other_stream")
    try:
        with pytest.raises(DeliveryError) as raised:
            destination.deliver(make_batch(range(1, 4)))
        assert not raised.value.retryable
    finally:
        destination.close()
    assert stored(name) == []


def test_nats_reconnects_after_the_connection_dropped(nats_stream: tuple[str, str]) -> None:
    name, subject = nats_stream
    destination = nats_destination(subject)
    try:
        destination.deliver(make_batch(range(1, 3)))
        assert destination._client is not None
        # The connection drops (as on a server restart): the next batch reconnects.
        asyncio.run_coroutine_threadsafe(destination._client.close(), destination._loop).result(
            timeout=10
        )
        destination.deliver(make_batch(range(3, 5)))
    finally:
        destination.close()
    assert [payload["position"] for _, payload in stored(name)] == [1, 2, 3, 4]


def test_nats_refused_connection_is_retryable_and_quotes_no_credentials() -> None:
    port = refused_port()
    destination = nats_destination(
        "auditcore.test.refused",
        servers=[f"nats://user:{SECRET}@127.0.0.1:{port}"],
        password=SECRET,
        token=SECRET,
    )
    try:
        with pytest.raises(DeliveryError) as raised:
            destination.deliver(make_batch(range(1, 3)))
    finally:
        destination.close()
    assert raised.value.retryable
    assert SECRET not in str(raised.value)
    assert raised.value.__cause__ is None  # nothing chained that could quote the URL


def test_nats_silent_server_times_out_retryably() -> None:
    with silent_port() as port:
        destination = nats_destination(
            "auditcore.test.silent", servers=[f"nats://127.0.0.1:{port}"], timeout_seconds=0.5
        )
        try:
            with pytest.raises(DeliveryError) as raised:
                destination.deliver(make_batch(range(1, 3)))
        finally:
            destination.close()
    assert raised.value.retryable


# --- Redis Streams ---------------------------------------------------------------------------


@pytest.fixture
def redis_key() -> Iterator[str]:
    key = f"auditcore:test:{uuid.uuid4().hex}"
    yield key
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(key, key + POSITIONS_SUFFIX)
    client.close()


def redis_destination(key: str, **settings: Any) -> RedisStreamsDestination:
    return RedisStreamsDestination(
        RedisStreamsSettings.model_validate(
            {"url": REDIS_URL, "key": key, "timeout_seconds": 2.0} | settings
        )
    )


def entries(key: str) -> list[dict[bytes, bytes]]:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        return [fields for _, fields in client.xrange(key)]  # type: ignore[union-attr,misc]
    finally:
        client.close()


def positions(key: str) -> list[int]:
    return [int(fields[b"position"]) for fields in entries(key)]


def test_redis_appends_the_batch_in_order_with_its_fields(redis_key: str) -> None:
    batch = make_batch(range(5, 505), workspace_id="ws.1")
    destination = redis_destination(redis_key)
    destination.deliver(batch)
    destination.close()
    found = entries(redis_key)
    assert [int(fields[b"position"]) for fields in found] == list(range(5, 505))
    first = found[0]
    assert set(first) == {
        b"delivery_id",
        b"position",
        b"workspace_id",
        b"stream_id",
        b"batch_id",
        b"occurred_at",
        b"payload",
    }
    assert first[b"delivery_id"] == b"stream-1:5"
    assert first[b"workspace_id"] == b"ws.1"
    assert first[b"stream_id"] == b"stream-1"
    assert first[b"batch_id"] == batch.batch_id.encode()
    assert first[b"occurred_at"].decode() == batch.events[0].occurred_at.isoformat()
    assert orjson.loads(first[b"payload"]) == batch.events[0].payload


def test_redis_retried_and_recut_batches_append_nothing_twice(redis_key: str) -> None:
    destination = redis_destination(redis_key)
    destination.deliver(make_batch(range(1, 101)))
    destination.deliver(make_batch(range(1, 101)))  # the same batch, retried
    destination.deliver(make_batch(range(50, 151), batch_id="recut"))  # cut differently
    destination.deliver(make_batch(range(151, 161)))
    destination.close()
    assert positions(redis_key) == list(range(1, 161))


def test_redis_streams_of_one_key_are_deduplicated_each_on_their_own(redis_key: str) -> None:
    destination = redis_destination(redis_key)
    destination.deliver(make_batch(range(1, 11), stream_id="a"))
    destination.deliver(make_batch(range(1, 11), stream_id="b", workspace_id="other"))
    destination.deliver(make_batch(range(1, 11), stream_id="a"))
    destination.close()
    assert len(entries(redis_key)) == 20


def test_redis_concurrent_retries_of_one_batch_append_it_once(redis_key: str) -> None:
    batch = make_batch(range(1, 301))
    destinations = [redis_destination(redis_key) for _ in range(6)]
    barrier = threading.Barrier(len(destinations))

    def deliver(destination: RedisStreamsDestination) -> None:
        barrier.wait(timeout=30)
        destination.deliver(batch)

    threads = [threading.Thread(target=deliver, args=(d,)) for d in destinations]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for destination in destinations:
        destination.close()
    assert positions(redis_key) == list(range(1, 301))


def test_redis_maxlen_trims_the_stream(redis_key: str) -> None:
    destination = redis_destination(redis_key, maxlen=100)
    for start in range(1, 1001, 100):
        destination.deliver(make_batch(range(start, start + 100)))
    destination.close()
    kept = positions(redis_key)
    assert len(kept) < 1000
    assert kept == list(range(1001 - len(kept), 1001))


def test_redis_key_of_another_type_is_not_retryable(redis_key: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    client.set(redis_key, "not a stream")
    client.close()
    destination = redis_destination(redis_key)
    with pytest.raises(DeliveryError) as raised:
        destination.deliver(make_batch(range(1, 3)))
    destination.close()
    assert not raised.value.retryable
    assert "WRONGTYPE" in str(raised.value)


def test_redis_refused_credentials_are_not_retryable_and_not_quoted(redis_key: str) -> None:
    # The server has no password: AUTH with one is refused.
    destination = redis_destination(redis_key, username="auditcore", password=SECRET)
    with pytest.raises(DeliveryError) as raised:
        destination.deliver(make_batch(range(1, 3)))
    destination.close()
    assert not raised.value.retryable
    assert SECRET not in str(raised.value)
    assert entries(redis_key) == []


def test_redis_refused_connection_is_retryable(redis_key: str) -> None:
    destination = redis_destination(
        redis_key, url=f"redis://127.0.0.1:{refused_port()}/0", password=SECRET
    )
    with pytest.raises(DeliveryError) as raised:
        destination.deliver(make_batch(range(1, 3)))
    destination.close()
    assert raised.value.retryable
    assert SECRET not in str(raised.value)


def test_redis_silent_server_times_out_retryably(redis_key: str) -> None:
    with silent_port() as port:
        destination = redis_destination(
            redis_key, url=f"redis://127.0.0.1:{port}/0", timeout_seconds=0.5
        )
        with pytest.raises(DeliveryError) as raised:
            destination.deliver(make_batch(range(1, 3)))
        destination.close()
    assert raised.value.retryable


def test_redis_settings_refuse_credentials_in_the_url() -> None:
    with pytest.raises(ValueError, match="pattern"):
        RedisStreamsSettings(url=f"redis://:{SECRET}@127.0.0.1:6379/0", key="k")


def test_nats_event_over_max_payload_is_not_retryable(nats_stream: tuple[str, str]) -> None:
    name, subject = nats_stream
    destination = nats_destination(subject)
    try:
        with pytest.raises(DeliveryError) as raised:
            destination.deliver(make_batch(range(1, 3), text="x" * (2 * 1024 * 1024)))
    finally:
        destination.close()
    assert not raised.value.retryable
    assert stored(name) == []
