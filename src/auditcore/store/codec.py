"""Deterministic bytes for stored events: compact JSON, the envelope's fields in their
declared order and every metadata object's keys sorted (done when the metadata is validated).

The store's own columns carry the stream id, version and action (as the topic), so the
stored state holds the rest of the envelope. The same event always encodes to the same bytes.
"""

from __future__ import annotations

from typing import Any

import orjson
from eventsourcing.persistence import Transcoder

from auditcore.events.envelope import COLUMN_FIELDS, AuditEvent

__all__ = ["COLUMN_FIELDS", "CanonicalJSONTranscoder", "encode_envelope"]


class CanonicalJSONTranscoder(Transcoder):
    """The library's transcoder interface over compact JSON with sorted keys."""

    def encode(self, obj: Any) -> bytes:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)

    def decode(self, data: bytes) -> Any:
        return orjson.loads(data)


def encode_envelope(event: AuditEvent) -> bytes:
    """The part of the envelope that is not already one of the store's columns, as JSON."""
    return event.stored_json()
