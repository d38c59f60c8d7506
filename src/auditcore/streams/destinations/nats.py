"""NATS JetStream: each event published to a subject a JetStream stream captures.

Wire format: one message per event, in commit order; the body is the payload as JSON; headers
``Nats-Msg-Id`` (the delivery id: JetStream's duplicate window drops a retried publish),
``Auditcore-Position``, ``Auditcore-Workspace`` and ``Auditcore-Batch``. With ``stream`` set,
publishes also carry ``Nats-Expected-Stream``, so a subject captured by another stream fails
instead of landing there.

Failure semantics: ``deliver`` returns only once JetStream acknowledged every message of the
batch (each ack means the message is stored; a duplicate's ack means it was stored before).
A missing ack (timeout), a lost or refused connection and JetStream's 503 raise a retryable
``DeliveryError``; no stream for the subject, a wrong expected stream or refused credentials
raise a non-retryable one. The retry publishes the same ids, so within the stream's duplicate
window (JetStream's default: 2 minutes) no message is stored twice; a retry after the window
may store one again (at least once; consumers drop by ``Nats-Msg-Id``). Publishes are
pipelined (all sent, then all acks awaited): should JetStream refuse one message of a batch
but store later ones, the retry stores it after them, so consumers that need commit order
sort by ``Auditcore-Position`` rather than by stream sequence.

nats-py is asyncio-only; the destination runs its connection on a private event loop in a
thread of its own (one per destination) and blocks the caller on each batch. A loop per
destination rather than ``asyncio.run`` per batch keeps the connection open across batches
(connecting is a round trip and a handshake per batch otherwise). After any failure the
connection is dropped and the next attempt reconnects. Credentials never appear in error
messages (nats-py's own error texts are reduced to their kind).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import ClassVar

import nats
import orjson
from nats import errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import api
from pydantic import BaseModel, ConfigDict, Field

from auditcore.streams.base import Batch, DeliveryError, Destination

SUBJECT_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
_WRONG_STREAM = 10060  # JetStream's err_code: the expected stream does not match
_NO_RESPONDERS = "503"  # NATS's status when nothing (no stream) listens on the subject


class NatsSettings(BaseModel):
    """The NATS servers, the subject to publish to and the stream expected to capture it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    servers: list[str] = Field(
        default_factory=lambda: ["nats://127.0.0.1:4222"], min_length=1, max_length=16
    )
    subject: str = Field(min_length=1, max_length=255, pattern=SUBJECT_PATTERN)
    stream: str | None = Field(default=None, min_length=1, max_length=255)
    user: str | None = Field(default=None, max_length=256)
    password: str | None = Field(default=None, max_length=256, repr=False)
    token: str | None = Field(default=None, max_length=512, repr=False)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)


class NatsJetStreamDestination(Destination):
    """NATS JetStream, deduplicated by ``Nats-Msg-Id``."""

    kind: ClassVar[str] = "nats"
    Settings: ClassVar[type[BaseModel]] = NatsSettings
    secret_fields: ClassVar[frozenset[str]] = frozenset({"password", "token"})

    def __init__(self, settings: BaseModel) -> None:
        super().__init__(settings)
        assert isinstance(settings, NatsSettings)
        self._config = settings
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="auditcore-stream-nats", daemon=True
        )
        self._thread.start()
        self._client: Client | None = None
        self._inbox = ""
        self._acks: dict[str, asyncio.Future[None]] = {}
        self._sent = 0

    def deliver(self, batch: Batch) -> None:
        if not batch.events:
            return
        future = asyncio.run_coroutine_threadsafe(self._deliver(batch), self._loop)
        try:
            # Every wait inside is bounded; this bound only guards against a stuck loop.
            future.result(timeout=self._config.timeout_seconds * 3 + 5)
        except TimeoutError:
            future.cancel()
            asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result()
            raise DeliveryError("nats: the batch was not acknowledged in time") from None

    async def _deliver(self, batch: Batch) -> None:
        try:
            client = await self._connected()
            headers = {"Auditcore-Batch": batch.batch_id}
            if self._config.stream is not None:
                headers["Nats-Expected-Stream"] = self._config.stream
            acks = []
            for event in batch.events:
                # Published in commit order on one connection: JetStream stores them so.
                self._sent += 1
                token = str(self._sent)
                ack = self._acks[token] = self._loop.create_future()
                acks.append(ack)
                await client.publish(
                    self._config.subject,
                    orjson.dumps(event.payload),
                    reply=f"{self._inbox}.{token}",
                    headers=headers
                    | {
                        "Nats-Msg-Id": event.delivery_id,
                        "Auditcore-Position": str(event.position),
                        "Auditcore-Workspace": event.workspace_id,
                    },
                )
            await asyncio.wait_for(asyncio.gather(*acks), self._config.timeout_seconds)
        except Exception as error:
            await self._disconnect()
            raise _delivery_error(error) from None

    async def _connected(self) -> Client:
        if self._client is not None and self._client.is_connected:
            return self._client

        async def ignore(_error: Exception) -> None:
            """nats-py logs callback errors by default, with texts that may quote servers."""

        config = self._config
        client = await nats.connect(
            servers=config.servers,
            user=config.user,
            password=config.password,
            token=config.token,
            connect_timeout=config.timeout_seconds,
            # Try each server twice, at once, then fail: the streamer retries with backoff.
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=ignore,
            name="auditcore-stream",
        )
        self._inbox = client.new_inbox()
        await client.subscribe(f"{self._inbox}.*", cb=self._on_ack)
        self._client = client
        return client

    async def _on_ack(self, message: Msg) -> None:
        """JetStream's answer to one publish: its ack, its refusal, or no stream at all.

        (nats-py's own ``publish_async`` never completes a refused publish: its reply handler
        raises where it should fail the publish's future, so acks are collected here.)"""
        future = self._acks.pop(message.subject.rpartition(".")[2], None)
        if future is None or future.done():
            return
        if message.headers and message.headers.get(api.Header.STATUS) == _NO_RESPONDERS:
            future.set_exception(
                DeliveryError(
                    "nats: no JetStream stream captures the subject (create it, then replay)",
                    retryable=False,
                )
            )
            return
        try:
            answer = orjson.loads(message.data)
        except orjson.JSONDecodeError:
            answer = {"error": {"code": None, "err_code": None}}
        error = answer.get("error") if isinstance(answer, dict) else None
        if error is None:
            future.set_result(None)  # stored, or stored before (``duplicate``: true)
            return
        code, err_code = error.get("code"), error.get("err_code")
        future.set_exception(
            DeliveryError(
                f"nats: JetStream refused the message ({code} {err_code})",
                retryable=(code is None or code >= 500) and err_code != _WRONG_STREAM,
            )
        )

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        for future in self._acks.values():
            future.cancel()
        self._acks.clear()
        if client is not None and not client.is_closed:
            # Closing a broken connection may fail too; it is gone either way.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.close(), self._config.timeout_seconds)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._disconnect(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def _delivery_error(error: Exception) -> DeliveryError:
    """What a failed publish means for the stream; the text names the kind of failure only."""
    if isinstance(error, DeliveryError):
        return error
    if isinstance(error, errors.MaxPayloadError):
        return DeliveryError(
            "nats: an event is larger than the server's max_payload", retryable=False
        )
    if isinstance(error, errors.AuthorizationError):
        return DeliveryError("nats: the server refused the credentials", retryable=False)
    if isinstance(error, asyncio.TimeoutError | errors.TimeoutError):
        return DeliveryError("nats: JetStream did not acknowledge the batch in time")
    return DeliveryError(f"nats: cannot publish ({type(error).__name__})")
