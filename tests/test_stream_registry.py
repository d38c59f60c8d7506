"""Every destination and format in the registries is reachable by the name users configure,
and a stream runs end to end through a broker destination in the OCSF format: the streamer's
machinery (positions, batching, delivery ids) meets a destination it was not written with."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from uuid import UUID

import orjson
import pytest
import redis

from auditcore import AuditCore
from auditcore.streams.config import StreamConfigs, StreamSpec, stream_configs
from auditcore.streams.destinations import DESTINATIONS
from auditcore.streams.formats import FORMATS
from auditcore.streams.streamer import delivery_id
from tests.test_streams import LONG_AGO, Running, acme_ids, caught_up, record

pytestmark = pytest.mark.store_only

REDIS_URL = "redis://127.0.0.1:6379/0"


def test_every_registered_name_loads_the_class_of_that_name() -> None:
    assert set(DESTINATIONS) == {"webhook", "splunk", "datadog", "files", "nats", "redis"}
    assert set(FORMATS) == {"envelope", "ocsf"}
    for kind, destination in DESTINATIONS.items():
        assert destination.kind == kind
    for name, payload_format in FORMATS.items():
        assert payload_format.name == name


@pytest.fixture
def configs(audit: AuditCore) -> Iterator[StreamConfigs]:
    found = stream_configs(audit)
    yield found
    found.close()


@pytest.fixture
def redis_key() -> Iterator[str]:
    key = f"auditcore:test:{uuid.uuid4().hex}"
    yield key
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(*client.keys(key + "*"))
    client.close()


def test_a_redis_stream_in_ocsf_gets_every_event_of_its_workspace_once_in_order(
    audit: AuditCore, configs: StreamConfigs, redis_key: str
) -> None:
    record(audit, 40)
    record(audit, 15, workspace="globex")
    record(audit, 40)
    spec = StreamSpec(
        name="lake", kind="redis", format="ocsf", start=LONG_AGO, max_events=7, max_wait=0.05,
        settings={"url": REDIS_URL, "key": redis_key, "timeout_seconds": 2.0},
    )  # fmt: skip
    info = configs.add("acme", spec, audit.app.recorder.max_notification_id() or 0)
    running = Running(audit, configs, info.id)
    try:
        caught_up(audit, configs, info.id)
    finally:
        running.close()
    client = redis.Redis.from_url(REDIS_URL)
    try:
        found = [fields for _, fields in client.xrange(redis_key)]  # type: ignore[union-attr,misc]
    finally:
        client.close()
    ids = acme_ids(audit)
    payloads = [orjson.loads(fields[b"payload"]) for fields in found]
    assert [payload["metadata"]["uid"] for payload in payloads] == ids
    assert {payload["class_uid"] for payload in payloads} == {6003}
    assert [fields[b"delivery_id"].decode() for fields in found] == [
        delivery_id(info.id, UUID(event_id)) for event_id in ids
    ]
