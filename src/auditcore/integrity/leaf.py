"""What one leaf of a workspace's Merkle log is: the event's stored bytes and its position.

A leaf's data ``d`` (hashed as ``SHA-256(0x00 || d)``, RFC 9162) is, big-endian throughout:

    0x01                      format version
    u64  index                the event's position in its workspace's log (0, 1, 2, …)
    16   stream id            the ``originator_id`` column as the UUID's 16 bytes
    i64  version              the ``originator_version`` column
    u32  length || bytes      the ``topic`` column (the action), UTF-8
    u32  length || bytes      the ``state`` column exactly as stored: the rest of the envelope
                              (event id, workspace, actor, targets, source, context, metadata,
                              schema version, ``occurred_at``, ``recorded_at``) as canonical JSON

So every stored column of the event is covered byte for byte, except the store's global
position (``notification_id``): the leaf's index in its workspace's log fixes the order that
matters, and a store copied to another database (new global positions) stays verifiable.
An event belongs to the log of the ``workspace_id`` in its state; an event whose state cannot
be read is logged under ``UNREADABLE`` (not a possible workspace id), so it can never stall the
log nor hide in another workspace's.

Beside the hash, each leaf keeps a few bytes of per-field checksums (``field_digests``): they
prove nothing (whoever edits an event can edit them too) but let ``verify`` say *which* field of
an edited event changed.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, NamedTuple

import orjson

from auditcore.integrity.merkle import leaf_hash

LEAF_FORMAT = 1
UNREADABLE = "!unreadable"
"""The log of events whose stored state is not a JSON object naming a workspace."""

COLUMNS = ("stream_id", "version", "action")
ENVELOPE = (
    "event_id",
    "workspace_id",
    "schema_version",
    "actor",
    "targets",
    "source",
    "occurred_at",
    "recorded_at",
    "context",
    "metadata",
)
FIELDS = (*COLUMNS, *ENVELOPE, "set of fields")
"""The fields ``field_digests`` covers, in its order."""

_HEAD = struct.Struct(">BQ16sq")
_crc32 = zlib.crc32
_dumps = orjson.dumps
_SORTED = orjson.OPT_SORT_KEYS
_DIGESTS = struct.Struct(f">{len(FIELDS)}I")


class LeafSource(NamedTuple):
    """An event as the leaf sees it: its stored columns, and what its state says."""

    workspace_id: str
    event_id: str | None
    state: dict[str, Any] | None


def read_state(state: bytes | str) -> LeafSource:
    """The workspace and event id the stored state names (``UNREADABLE`` if it names none)."""
    try:
        decoded = orjson.loads(state)
    except (orjson.JSONDecodeError, TypeError):
        return LeafSource(UNREADABLE, None, None)
    if not isinstance(decoded, dict):
        return LeafSource(UNREADABLE, None, None)
    workspace, event_id = decoded.get("workspace_id"), decoded.get("event_id")
    if not isinstance(workspace, str) or not workspace:
        return LeafSource(UNREADABLE, None, decoded)
    return LeafSource(workspace, event_id if isinstance(event_id, str) else None, decoded)


def stream_bytes(stream_id: str) -> bytes:
    """A UUID's 16 bytes from its text (dashed or not), as fast as Python allows."""
    raw = bytes.fromhex(stream_id.replace("-", ""))
    if len(raw) != 16:
        raise ValueError(f"stream id {stream_id!r} is not a UUID")
    return raw


def leaf_data(
    index: int, stream_id: str, version: int, action: str | bytes, state: bytes | str
) -> bytes:
    """The leaf's data ``d``, as the module header defines it. (A column edited to another
    type, e.g. SQLite text where bytes were stored, is taken as its UTF-8 bytes.)"""
    topic = action.encode() if isinstance(action, str) else bytes(action)
    stored = state.encode() if isinstance(state, str) else bytes(state)
    return b"".join(
        (
            _HEAD.pack(LEAF_FORMAT, index, stream_bytes(stream_id), int(version)),
            len(topic).to_bytes(4, "big"),
            topic,
            len(stored).to_bytes(4, "big"),
            stored,
        )
    )


def event_leaf_hash(
    index: int, stream_id: str, version: int, action: str | bytes, state: bytes | str
) -> bytes:
    return leaf_hash(leaf_data(index, stream_id, version, action, state))


def field_digests(
    stream_id: str, version: int, action: str | bytes, state: dict[str, Any] | None
) -> bytes:
    """A CRC-32 per field (``FIELDS``; the last, how many fields the state has): diagnostic
    only, never evidence. On the follower's hot path, hence terse."""
    fields = state or {}
    get = fields.get
    topic = action if isinstance(action, str) else bytes(action).decode(errors="replace")
    return _DIGESTS.pack(
        _crc32(stream_id.encode()),
        int(version) & 0xFFFFFFFF,
        _crc32(topic.encode()),
        *[_crc32(_dumps(get(name), option=_SORTED)) for name in ENVELOPE],
        len(fields),
    )


def changed_fields(logged: bytes, current: bytes) -> list[str]:
    """The fields whose digests differ (all, if the logged digests are unreadable)."""
    if len(logged) != _DIGESTS.size or len(current) != _DIGESTS.size:
        return list(FIELDS)
    return [
        name
        for name, before, after in zip(
            FIELDS, _DIGESTS.unpack(logged), _DIGESTS.unpack(current), strict=True
        )
        if before != after
    ]
