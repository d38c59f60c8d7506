"""Log stream destinations: events/s delivered to NATS JetStream (every publish acknowledged,
deduplicated by Nats-Msg-Id), Redis Streams (one idempotent script per batch) and gzipped JSON
Lines files, per batch size, beside the ceiling measured in the same run: the same messages
published to core NATS with no JetStream acks (one flush at the end).

Needs NATS with JetStream on 127.0.0.1:4222 and Redis on 127.0.0.1:6379 (``.ci/run`` starts
them). Each run uses a JetStream stream and a Redis key of its own, removed afterwards.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from collections.abc import Callable

import nats
import orjson
import redis
from tests.stream_receivers import make_batch

from auditcore.streams.base import Batch, Destination
from auditcore.streams.destinations.files import FilesDestination, FilesSettings
from auditcore.streams.destinations.nats import NatsJetStreamDestination, NatsSettings
from auditcore.streams.destinations.redis_streams import (
    POSITIONS_SUFFIX,
    RedisStreamsDestination,
    RedisStreamsSettings,
)
from benchmarks.common import Measurement, report

NATS_URL = "nats://127.0.0.1:4222"
REDIS_URL = "redis://127.0.0.1:6379/0"


def batches(events: int, size: int, stream_id: str) -> list[Batch]:
    """``events`` events (about 300 bytes of payload each) in batches of ``size``."""
    return [
        make_batch(range(start, min(start + size, events + 1)), stream_id=stream_id)
        for start in range(1, events + 1, size)
    ]


def timed(name: str, destination: Destination, work: list[Batch]) -> Measurement:
    started = time.perf_counter()
    for batch in work:
        destination.deliver(batch)
    seconds = time.perf_counter() - started
    destination.close()
    return Measurement(name, sum(len(b.events) for b in work), seconds)


async def _core_nats(subject: str, work: list[Batch]) -> float:
    client = await nats.connect(NATS_URL)
    started = time.perf_counter()
    for batch in work:
        for event in batch.events:
            await client.publish(
                subject, orjson.dumps(event.payload), headers={"Nats-Msg-Id": event.delivery_id}
            )
    await client.flush()
    seconds = time.perf_counter() - started
    await client.close()
    return seconds


async def _jetstream(action: Callable[..., object]) -> None:
    client = await nats.connect(NATS_URL)
    try:
        await action(client.jetstream())  # type: ignore[misc]
    finally:
        await client.close()


def nats_jetstream(events: int, size: int) -> Measurement:
    """Events/s to NATS JetStream in batches of ``size``, every publish acknowledged."""
    name = f"bench_{uuid.uuid4().hex[:10]}"
    subject = f"auditcore.bench.{name}"

    async def create(js: nats.js.JetStreamContext) -> None:
        await js.add_stream(name=name, subjects=[subject])

    async def delete(js: nats.js.JetStreamContext) -> None:
        await js.delete_stream(name)

    asyncio.run(_jetstream(create))
    try:
        destination = NatsJetStreamDestination(NatsSettings(subject=subject, stream=name))
        return timed(f"nats jetstream, batches of {size}", destination, batches(events, size, name))
    finally:
        asyncio.run(_jetstream(delete))


def run(events: int, sizes: tuple[int, ...] = (100, 1_000)) -> None:
    work = batches(events, 1_000, "core")
    subject = f"auditcore.bench.core.{uuid.uuid4().hex[:10]}"
    ceiling = Measurement(
        "core nats publish, no acks (ceiling)", events, asyncio.run(_core_nats(subject, work))
    )
    rows = [ceiling]
    for size in sizes:
        rows.append(nats_jetstream(events, size))
    key = f"auditcore:bench:{uuid.uuid4().hex}"
    try:
        for size in sizes:
            destination = RedisStreamsDestination(RedisStreamsSettings(url=REDIS_URL, key=key))
            rows.append(
                timed(f"redis streams, batches of {size}", destination, batches(events, size, key))
            )
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(key, key + POSITIONS_SUFFIX)
        client.close()
    with tempfile.TemporaryDirectory() as directory:
        destination = FilesDestination(FilesSettings(directory=directory))
        rows.append(timed("files (local, gzip)", destination, batches(events, 1_000, "files")))
    report("streams-destinations", rows, ceiling.name, {"events": events})
