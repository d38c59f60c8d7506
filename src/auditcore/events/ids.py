"""Event ids: random (version 4) UUIDs, drawn from the OS's randomness in blocks.

``uuid.uuid4()`` makes one system call per id, a visible cost when events are dispatched by
the hundred thousand; this takes 256 ids' worth at a time. Each thread has its own block, so
producer threads never wait on a lock (a contended lock costs several times the id itself).
A forked child discards the block it inherited, so two processes never hand out the same ids.

Event ids are scoped per workspace: two workspaces may hold the same ``event_id`` (each its own
idempotency key), so a stream's id cannot simply be the id of the event that started it — the
store's stream ids are global, and a clash would tell one workspace about another's events.
``stream_id_for`` derives it from both; it is the only place that computes it.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from uuid import UUID, uuid5

from pydantic import TypeAdapter, ValidationError

_BLOCK = 16 * 256
_STREAM_NAMESPACE = UUID("6f1d3c52-86a4-5c0e-9a57-3b1f5e0a7c21")
_UUID = TypeAdapter(UUID)


class _Block(threading.local):
    def __init__(self) -> None:
        self.randomness = b""
        self.offset = _BLOCK


_block = _Block()


def new_event_id() -> UUID:
    block = _block
    offset = block.offset
    if offset >= _BLOCK:
        block.randomness, offset = os.urandom(_BLOCK), 0
    block.offset = offset + 16
    return UUID(bytes=block.randomness[offset : offset + 16], version=4)


def _discard_block() -> None:
    # Only the forking thread exists in the child, and this runs in it.
    _block.offset = _BLOCK


os.register_at_fork(after_in_child=_discard_block)


def stream_id_for(workspace_id: str, event_id: UUID) -> UUID:
    """The id of the stream that the event ``event_id`` of ``workspace_id`` starts (a
    standalone event's own stream, or an aggregate's): a name-based (version 5) UUID of the
    two, so one workspace's ids can never name, or collide with, another's streams.

    Events stored before this rule have ``stream_id == event_id``; they keep it."""
    return uuid5(_STREAM_NAMESPACE, f"{workspace_id}\n{event_id}")


def stream_id_or_none(workspace_id: Any, event_id: Any) -> UUID | None:
    """``stream_id_for`` of values not validated yet; None if either is not of its type (the
    envelope's validation names the field at fault)."""
    if not isinstance(workspace_id, str):
        return None
    if isinstance(event_id, UUID):
        return stream_id_for(workspace_id, event_id)
    try:
        # pydantic's parse, so exactly what the envelope accepts as an event id is accepted.
        return stream_id_for(workspace_id, _UUID.validate_python(event_id))
    except ValidationError:
        return None
