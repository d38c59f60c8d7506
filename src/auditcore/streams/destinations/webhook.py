"""The generic webhook destination: each batch is one HTTPS POST of JSON, signed per the
Standard Webhooks specification (https://www.standardwebhooks.com).

Wire format::

    POST <url>
    content-type: application/json
    webhook-id: <batch id>             stable across retries of the same batch
    webhook-timestamp: <unix seconds>  when this attempt was signed
    webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">

    {"type": "auditcore.events", "stream_id": ..., "workspace_id": ..., "batch_id": ...,
     "events": [{"delivery_id": ..., "event": <the payload format's object>}, ...]}

Events are in commit order; ``delivery_id`` is the receiver's key for dropping duplicates.

Failure semantics: a 2xx answer means the whole batch was accepted. 408, 429 and 5xx answers,
timeouts and connection failures raise a retryable ``DeliveryError``; any other answer (a 4xx:
the credentials or the payload were refused) raises a non-retryable one. Error messages name
the status and the URL's host, never the secret or the body.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator
from standardwebhooks.webhooks import Webhook

from auditcore.streams.base import Batch, DeliveryError, Destination

RETRYABLE_STATUS = frozenset({408, 429})


class WebhookSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2000)
    """Where batches are POSTed (http or https)."""
    secret: str = Field(max_length=200)
    """The Standard Webhooks signing secret: ``whsec_`` and base64 of 24 to 64 bytes."""
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    """Seconds to connect and for the receiver to answer."""

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("give an http:// or https:// URL with a host")
        return url

    @field_validator("secret")
    @classmethod
    def _signing_secret(cls, secret: str) -> str:
        if not secret.startswith("whsec_"):
            raise ValueError("a Standard Webhooks secret starts with whsec_")
        try:
            Webhook(secret)
        except Exception:
            raise ValueError("the secret after whsec_ must be base64") from None
        return secret


class WebhookDestination(Destination):
    kind: ClassVar[str] = "webhook"
    Settings: ClassVar[type[BaseModel]] = WebhookSettings
    secret_fields: ClassVar[frozenset[str]] = frozenset({"secret"})

    def __init__(self, settings: BaseModel) -> None:
        super().__init__(settings)
        self.config: WebhookSettings = WebhookSettings.model_validate(settings.model_dump())
        self._signer = Webhook(self.config.secret)
        self._client = httpx.Client(timeout=self.config.timeout_seconds, follow_redirects=False)
        self._where = urlsplit(self.config.url).hostname or "?"

    def body(self, batch: Batch) -> bytes:
        return orjson.dumps(
            {
                "type": "auditcore.events",
                "stream_id": batch.stream_id,
                "workspace_id": batch.workspace_id,
                "batch_id": batch.batch_id,
                "events": [
                    {"delivery_id": event.delivery_id, "event": event.payload}
                    for event in batch.events
                ],
            }
        )

    def deliver(self, batch: Batch) -> None:
        body = self.body(batch)
        now = datetime.now(UTC)
        headers: dict[str, Any] = {
            "content-type": "application/json",
            "webhook-id": batch.batch_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._signer.sign(batch.batch_id, now, body.decode()),
            "user-agent": "auditcore-streams",
        }
        try:
            response = self._client.post(self.config.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryError(f"webhook {self._where}: no answer in time") from None
        except httpx.HTTPError as error:
            raise DeliveryError(
                f"webhook {self._where}: cannot connect ({type(error).__name__})"
            ) from None
        status = response.status_code
        if 200 <= status < 300:
            return
        retryable = status in RETRYABLE_STATUS or status >= 500
        raise DeliveryError(f"webhook {self._where} answered {status}", retryable=retryable)

    def close(self) -> None:
        self._client.close()
