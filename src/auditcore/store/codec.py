"""Deterministic bytes for stored events: compact JSON with sorted keys.

The store's own columns carry the stream id, version and action (as the topic), so the
stored state holds the rest of the envelope. The same event always encodes to the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

from eventsourcing.persistence import Transcoder

from auditcore.events.envelope import AuditEvent

COLUMN_FIELDS = frozenset({"stream_id", "version", "action"})


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class CanonicalJSONTranscoder(Transcoder):
    """The library's transcoder interface over canonical JSON."""

    def encode(self, obj: Any) -> bytes:
        return canonical_json(obj)

    def decode(self, data: bytes) -> Any:
        return json.loads(data)


def envelope_state(event: AuditEvent) -> dict[str, Any]:
    """The part of the envelope that is not already one of the store's columns."""
    return event.model_dump(mode="json", exclude=set(COLUMN_FIELDS))
