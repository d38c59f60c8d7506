"""Event ids: random (version 4) UUIDs, drawn from the OS's randomness in blocks.

``uuid.uuid4()`` makes one system call per id, a visible cost when events are dispatched by
the hundred thousand; this takes 256 ids' worth at a time. Each thread has its own block, so
producer threads never wait on a lock (a contended lock costs several times the id itself).
A forked child discards the block it inherited, so two processes never hand out the same ids.
"""

from __future__ import annotations

import os
import threading
from uuid import UUID

_BLOCK = 16 * 256


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
