"""Datadog Logs intake (v2): a batch as one or more POSTs of JSON arrays to ``/api/v2/logs``.

Wire format: ``DD-API-KEY: <key>``; the body is a JSON array of log entries ``{ddsource,
service, ddtags, hostname, message, delivery_id}``, where ``message`` is the payload as a JSON
string (Datadog parses it into attributes) and ``ddtags`` carries the workspace, the stream and
the configured tags. The intake's limits are kept by splitting the batch, in order, into
requests of at most ``max_entries`` entries (1,000) and ``max_request_bytes`` (5 MB) each.

Failure semantics: the batch is delivered only when every request of it was accepted (2xx);
the first refusal raises ``DeliveryError`` and the streamer retries the whole batch, so the
requests accepted before it reach Datadog again (at least once; ``delivery_id`` tells
duplicates apart). 408, 429, 5xx, timeouts and refused connections are retryable; other 4xx
(bad key, bad payload) are not. An entry over the intake's 1 MB per log cannot be sent without
Datadog truncating it, so it raises a non-retryable ``DeliveryError`` naming its position
instead (auditcore's own event bounds keep events far below it). The API key never appears in
an error message.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from auditcore.streams.base import Batch, DeliveryError, Destination
from auditcore.streams.destinations.splunk import redact, shown_url

MAX_ENTRIES = 1_000
MAX_REQUEST_BYTES = 5 * 1024 * 1024
MAX_ENTRY_BYTES = 1024 * 1024
"""Datadog's intake limits: entries per request, bytes per request and per log entry
(uncompressed)."""
_RETRYABLE_STATUSES = frozenset({408, 425, 429})


class DatadogSettings(BaseModel):
    """Where and how to send to Datadog's logs intake."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    api_key: str = Field(min_length=1, max_length=256, repr=False)
    site: str = Field(
        default="datadoghq.com",
        pattern=r"^[a-z0-9.-]{1,64}$",
        description="Datadog site: datadoghq.com, datadoghq.eu, us3.datadoghq.com, ...",
    )
    base_url: HttpUrl | None = Field(
        default=None, description="The intake's URL instead of the site's (a proxy, tests)."
    )
    service: str = Field(default="auditcore", min_length=1, max_length=100)
    ddsource: str = Field(default="auditcore", min_length=1, max_length=100)
    ddtags: str = Field(default="", max_length=1000, description="Extra tags, comma-separated.")
    hostname: str = Field(default_factory=socket.gethostname, min_length=1, max_length=256)
    max_entries: int = Field(default=MAX_ENTRIES, ge=1, le=MAX_ENTRIES)
    max_request_bytes: int = Field(default=MAX_REQUEST_BYTES, ge=1024, le=MAX_REQUEST_BYTES)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


class DatadogLogsDestination(Destination):
    """Datadog Logs intake v2."""

    kind: ClassVar[str] = "datadog"
    Settings: ClassVar[type[BaseModel]] = DatadogSettings
    secret_fields: ClassVar[frozenset[str]] = frozenset({"api_key"})

    def __init__(self, settings: BaseModel) -> None:
        super().__init__(settings)
        assert isinstance(settings, DatadogSettings)
        self._config = settings
        base = (
            str(settings.base_url)
            if settings.base_url
            else f"https://http-intake.logs.{settings.site}"
        )
        self._endpoint = base.rstrip("/") + "/api/v2/logs"
        self._shown = shown_url(self._endpoint)
        self._client = httpx.Client(timeout=settings.timeout_seconds)

    def entries(self, batch: Batch) -> list[bytes]:
        """Each event's log entry as JSON, in commit order."""
        config = self._config
        # A comma would split the tag in two (workspace ids hold none; stream ids, who knows).
        tags = f"workspace:{batch.workspace_id},stream:{batch.stream_id.replace(',', '_')}"
        if config.ddtags:
            tags += "," + config.ddtags
        encoded = []
        for event in batch.events:
            entry: dict[str, Any] = {
                "ddsource": config.ddsource,
                "service": config.service,
                "ddtags": tags,
                "hostname": config.hostname,
                "message": orjson.dumps(event.payload).decode(),
                "delivery_id": event.delivery_id,
            }
            data = orjson.dumps(entry)
            if len(data) > MAX_ENTRY_BYTES:
                raise DeliveryError(
                    f"datadog: the event at position {event.position} is {len(data)} bytes as a "
                    f"log entry, over the intake's {MAX_ENTRY_BYTES} per log",
                    retryable=False,
                )
            encoded.append(data)
        return encoded

    def requests(self, batch: Batch) -> Iterator[bytes]:
        """The batch's request bodies: JSON arrays within the entry and byte limits, in order."""
        config = self._config
        chunk: list[bytes] = []
        size = 2  # the array's brackets
        for data in self.entries(batch):
            added = len(data) + (1 if chunk else 0)  # the comma before it
            if chunk and (
                len(chunk) == config.max_entries or size + added > config.max_request_bytes
            ):
                yield b"[" + b",".join(chunk) + b"]"
                chunk, size, added = [], 2, len(data)
            if size + added > config.max_request_bytes:
                raise DeliveryError(
                    "datadog: one log entry is over max_request_bytes "
                    f"({config.max_request_bytes})",
                    retryable=False,
                )
            chunk.append(data)
            size += added
        if chunk:
            yield b"[" + b",".join(chunk) + b"]"

    def deliver(self, batch: Batch) -> None:
        for body in self.requests(batch):
            self._post(body)

    def _post(self, body: bytes) -> None:
        try:
            response = self._client.post(
                self._endpoint,
                content=body,
                headers={"DD-API-KEY": self._config.api_key, "Content-Type": "application/json"},
            )
        except httpx.TimeoutException:
            raise DeliveryError(f"datadog: {self._shown} timed out") from None
        except httpx.HTTPError as error:
            # The exception's text may quote the URL; only its kind is reported.
            raise DeliveryError(
                f"datadog: cannot reach {self._shown} ({type(error).__name__})"
            ) from None
        if response.is_success:
            return
        status = response.status_code
        raise DeliveryError(
            f"datadog: the intake answered {status}: "
            + redact(response.text, (self._config.api_key,)),
            retryable=status >= 500 or status in _RETRYABLE_STATUSES,
        )

    def close(self) -> None:
        self._client.close()
