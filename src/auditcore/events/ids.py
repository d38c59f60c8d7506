"""Event ids: random (version 4) UUIDs, drawn from the OS's randomness in blocks.

``uuid.uuid4()`` makes one system call per id, a visible cost when events are dispatched by
the hundred thousand; this takes 256 ids' worth at a time. The pool is discarded in a forked
child, so two processes never hand out the same ids.
"""

from __future__ import annotations

import os
import threading
from uuid import UUID

_BLOCK = 16 * 256
_pool = b""
_offset = _BLOCK
_lock = threading.Lock()


def new_event_id() -> UUID:
    global _pool, _offset  # noqa: PLW0603 - one pool per process
    with _lock:
        if _offset >= len(_pool):
            _pool, _offset = os.urandom(_BLOCK), 0
        raw = _pool[_offset : _offset + 16]
        _offset += 16
    return UUID(bytes=raw, version=4)


def _discard_pool() -> None:
    global _pool, _offset
    _pool, _offset = b"", _BLOCK


os.register_at_fork(after_in_child=_discard_pool)
