"""What a log stream hands a destination, and the two seams every destination and payload
format implements.

Failure semantics: ``Destination.deliver`` either returns, and then every event of the batch
has been accepted by the receiver (the stream's position may move past the batch), or raises
``DeliveryError``; the streamer then retries the same batch (same ids), and never moves past
an undelivered event. A destination therefore must not report success for a partial batch.
Receivers drop duplicates by ``StreamEvent.delivery_id`` (stable per stream and event, across
retries and restarts); ``Batch.batch_id`` is stable across retries of the same batch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel

from auditcore.errors import AuditcoreError
from auditcore.events.envelope import AuditEvent
from auditcore.projection.records import EventRecord


class DeliveryError(AuditcoreError):
    """A batch was not delivered. ``retryable`` is False when retrying cannot help (the
    receiver refused the credentials or the payload): the stream goes to dead-letter at once."""

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One event as a stream delivers it."""

    position: int
    """The event's position in the store's commit order."""
    delivery_id: str
    """Stable per stream and event: the receiver's key for dropping duplicates."""
    workspace_id: str
    occurred_at: datetime
    payload: Mapping[str, Any]
    """The event in the stream's payload format (JSON-serialisable)."""


@dataclass(frozen=True, slots=True)
class Batch:
    """Consecutive events of one stream (one workspace), in commit order."""

    stream_id: str
    workspace_id: str
    batch_id: str
    events: Sequence[StreamEvent]


class PayloadFormat(ABC):
    """Turns a stored event (personal fields already opened, or marked erased) into the JSON
    object a destination sends."""

    name: ClassVar[str]

    @abstractmethod
    def format(self, event: EventRecord) -> dict[str, Any]:
        """The event's payload."""

    def payload(self, event: AuditEvent, record: Callable[[], EventRecord]) -> dict[str, Any]:
        """What the streamer calls: the event as the API's validated envelope (which alone
        carries every field, the actor's metadata included), and a way to get it as a record
        (decoded only when asked for). Formats built from the record need not override it."""
        return self.format(record())


class Destination(ABC):
    """Where a stream's batches go. One instance per running stream; ``deliver`` is called from
    one thread at a time, batch after batch."""

    kind: ClassVar[str]
    """The name users configure (``webhook``, ``splunk``, ...)."""
    Settings: ClassVar[type[BaseModel]]
    """The destination's configuration, validated on ``streams add`` (pydantic, extra keys
    forbidden)."""
    secret_fields: ClassVar[frozenset[str]] = frozenset()
    """Settings that are credentials: stored encrypted, never logged, never returned."""

    def __init__(self, settings: BaseModel) -> None:
        self.settings = settings

    @abstractmethod
    def deliver(self, batch: Batch) -> None:
        """Deliver the whole batch, or raise ``DeliveryError``."""

    def close(self) -> None:  # noqa: B027 - optional: most destinations hold nothing
        """Release connections; the destination is not used again."""
