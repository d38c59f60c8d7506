"""Splunk HTTP Event Collector (HEC): a batch as one POST to ``/services/collector/event``.

Wire format: ``Authorization: Splunk <token>``; the body is the batch's events as HEC event
objects (``time`` in epoch seconds with microseconds, ``host``, ``source``, ``sourcetype``,
``index`` when configured, ``event`` = the payload, ``fields`` = the delivery id, position,
workspace and batch as indexed fields), one JSON object per line, in commit order.

Failure semantics: HEC accepts or refuses a request as a whole, so ``deliver`` returns only on a
2xx answer whose body is HEC's JSON with ``code`` 0 (success); any other 2xx (a proxy's page)
is not taken for a delivery. Server errors, 408, 429, 503 (HEC busy or
unhealthy), timeouts and refused connections raise a retryable ``DeliveryError``; other 4xx
answers (bad token, disabled token, bad format, payload too large) cannot succeed by retrying
and raise a non-retryable one. Splunk keeps no dedupe key: a retried batch may be indexed twice
(at least once), and searches drop duplicates by ``fields.delivery_id``. The token never
appears in an error message (it is redacted from anything the receiver echoes).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from auditcore.streams.base import Batch, DeliveryError, Destination, StreamEvent

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
_ECHO_LIMIT = 200
"""How much of a refusal's body an error message quotes (receivers may answer with pages)."""


class SplunkSettings(BaseModel):
    """Where and how to send to a HEC endpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl = Field(description="HEC's base URL, e.g. https://splunk.example.com:8088")
    token: str = Field(min_length=1, max_length=512, repr=False, description="The HEC token.")
    host: str = Field(default_factory=socket.gethostname, min_length=1, max_length=256)
    source: str = Field(default="auditcore", min_length=1, max_length=256)
    sourcetype: str = Field(default="auditcore:event", min_length=1, max_length=256)
    index: str | None = Field(default=None, min_length=1, max_length=256)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


def epoch_seconds(moment: datetime) -> float:
    """``moment`` as HEC's ``time``: seconds since the epoch, microseconds as the fraction."""
    delta = moment - _EPOCH
    return delta.days * 86_400 + delta.seconds + delta.microseconds / 1_000_000


def shown_url(url: str) -> str:
    """``url`` as error messages quote it: without user name and password."""
    return str(httpx.URL(url).copy_with(username=None, password=None))


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` cut to a quotable length, with every secret in it replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text[:_ECHO_LIMIT]


class SplunkHecDestination(Destination):
    """Splunk HTTP Event Collector."""

    kind: ClassVar[str] = "splunk"
    Settings: ClassVar[type[BaseModel]] = SplunkSettings
    secret_fields: ClassVar[frozenset[str]] = frozenset({"token"})

    def __init__(self, settings: BaseModel) -> None:
        super().__init__(settings)
        assert isinstance(settings, SplunkSettings)
        self._config = settings
        self._endpoint = str(settings.url).rstrip("/") + "/services/collector/event"
        self._shown = shown_url(self._endpoint)
        self._client = httpx.Client(timeout=settings.timeout_seconds)

    def body(self, batch: Batch) -> bytes:
        """The request body: one HEC event object per line, in commit order."""
        return b"\n".join(orjson.dumps(self._hec_event(batch, event)) for event in batch.events)

    def _hec_event(self, batch: Batch, event: StreamEvent) -> dict[str, Any]:
        config = self._config
        hec: dict[str, Any] = {
            "time": epoch_seconds(event.occurred_at),
            "host": config.host,
            "source": config.source,
            "sourcetype": config.sourcetype,
        }
        if config.index is not None:
            hec["index"] = config.index
        hec["event"] = event.payload
        hec["fields"] = {
            "delivery_id": event.delivery_id,
            "position": str(event.position),
            "workspace_id": event.workspace_id,
            "batch_id": batch.batch_id,
        }
        return hec

    def deliver(self, batch: Batch) -> None:
        if not batch.events:
            return
        secrets = (self._config.token,)
        try:
            response = self._client.post(
                self._endpoint,
                content=self.body(batch),
                headers={
                    "Authorization": f"Splunk {self._config.token}",
                    "Content-Type": "application/json",
                },
            )
        except httpx.TimeoutException:
            raise DeliveryError(f"splunk: {self._shown} timed out") from None
        except httpx.HTTPError as error:
            # The exception's text may quote the URL; only its kind is reported.
            raise DeliveryError(
                f"splunk: cannot reach {self._shown} ({type(error).__name__})"
            ) from None
        hec_code, text = _hec_answer(response)
        if response.is_success and hec_code == 0:
            return
        retryable = (
            # A 2xx without HEC's success code is not HEC's acceptance (a proxy's page?).
            response.is_success
            or response.status_code >= 500
            or response.status_code in _RETRYABLE_STATUSES
        )
        raise DeliveryError(
            f"splunk: HEC answered {response.status_code}"
            + (f" (code {hec_code})" if hec_code is not None else "")
            + f": {redact(text, secrets)}",
            retryable=retryable,
        )

    def close(self) -> None:
        self._client.close()


def _hec_answer(response: httpx.Response) -> tuple[int | None, str]:
    """HEC's ``code`` and ``text`` (its JSON answer), or the raw body when it is not HEC's."""
    try:
        answer = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None, response.text
    if isinstance(answer, dict):
        code = answer.get("code")
        return (code if isinstance(code, int) else None), str(answer.get("text", ""))
    return None, response.text
