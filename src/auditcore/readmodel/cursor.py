"""Opaque keyset cursors on (occurred_at, event_id).

A cursor remembers the last row of a page and which query it belongs to, so the next page
continues strictly after it (new events never shift a page) and cannot be replayed against a
different query.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from auditcore.errors import InvalidQueryError

_HOW_TO_FIX = "pass the next_cursor of a previous page unchanged, or omit it for the first page"


@dataclass(frozen=True)
class Cursor:
    occurred_at: datetime
    event_id: UUID
    query: str

    def encode(self) -> str:
        payload = {"t": self.occurred_at.isoformat(), "id": str(self.event_id), "q": self.query}
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, query: str) -> Cursor:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            payload = json.loads(raw)
            cursor = cls(datetime.fromisoformat(payload["t"]), UUID(payload["id"]), payload["q"])
        except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise InvalidQueryError("cursor", f"malformed cursor; {_HOW_TO_FIX}") from None
        if cursor.occurred_at.tzinfo is None:
            raise InvalidQueryError("cursor", f"malformed cursor; {_HOW_TO_FIX}")
        if cursor.query != query:
            raise InvalidQueryError(
                "cursor", f"this cursor belongs to a different query (other filters); {_HOW_TO_FIX}"
            )
        return cursor


def query_fingerprint(parts: dict[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
