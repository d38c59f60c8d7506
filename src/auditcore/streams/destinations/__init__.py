"""Every destination a stream can deliver to, by the kind users configure.

Each is imported when first used: their client libraries (boto3, nats-py, redis) would
otherwise load into every process that reads a stream's configuration."""

from __future__ import annotations

from auditcore.lazy import LazyRegistry
from auditcore.streams.base import Destination

_HERE = "auditcore.streams.destinations"

DESTINATIONS: LazyRegistry[type[Destination]] = LazyRegistry(
    {
        "webhook": f"{_HERE}.webhook:WebhookDestination",
        "splunk": f"{_HERE}.splunk:SplunkHecDestination",
        "datadog": f"{_HERE}.datadog:DatadogLogsDestination",
        "files": f"{_HERE}.files:FilesDestination",
        "nats": f"{_HERE}.nats:NatsJetStreamDestination",
        "redis": f"{_HERE}.redis_streams:RedisStreamsDestination",
    }
)
