"""Opaque, signed keyset cursors on (occurred_at, event_id).

A cursor remembers the last row of a page and which query it belongs to, so the next page
continues strictly after it (new events never shift a page) and cannot be replayed against a
different query. It is signed (HMAC-SHA256 with the installation's cursor secret, over the
workspace and the payload), so only cursors this installation issued, for this workspace, are
read at all: a forged or altered one (another position, a nested JSON bomb, random bytes) is
refused before its payload is parsed.

Failure semantics: every cursor that is not one this installation issued for this workspace and
query raises ``InvalidQueryError("cursor", …)``; nothing else escapes ``decode``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from auditcore.errors import InvalidQueryError

_HOW_TO_FIX = "pass the next_cursor of a previous page unchanged, or omit it for the first page"
_MAX_LENGTH = 512
"""Longer than any cursor issued (~190 characters): anything longer is refused unread."""
_DOMAIN = b"auditcore cursor v1\n"
_MAC_BYTES = 16
CURSOR_PATTERN = "^[A-Za-z0-9_-]{1,480}[.][A-Za-z0-9_-]{22}$"
"""What every cursor looks like (its payload and signature, base64url): for OpenAPI."""


@dataclass(frozen=True)
class Cursor:
    occurred_at: datetime
    event_id: UUID
    query: str

    def encode(self, key: bytes, workspace_id: str) -> str:
        payload = {"t": self.occurred_at.isoformat(), "id": str(self.event_id), "q": self.query}
        raw = json.dumps(payload, separators=(",", ":")).encode()
        return f"{_b64(raw)}.{_b64(_mac(key, workspace_id, raw))}"

    @classmethod
    def decode(cls, text: str, query: str, key: bytes, workspace_id: str) -> Cursor:
        raw = _verified(text, key, workspace_id)
        try:
            payload = json.loads(raw)
            cursor = cls(datetime.fromisoformat(payload["t"]), UUID(payload["id"]), payload["q"])
        except (ValueError, KeyError, TypeError):
            # Signed by us yet unreadable: only a change to this module's format does that.
            raise InvalidQueryError("cursor", f"malformed cursor; {_HOW_TO_FIX}") from None
        if cursor.query != query:
            raise InvalidQueryError(
                "cursor", f"this cursor belongs to a different query (other filters); {_HOW_TO_FIX}"
            )
        return cursor


def _verified(text: str, key: bytes, workspace_id: str) -> bytes:
    """The payload of a cursor this installation signed for this workspace."""
    body, dot, signature = text.partition(".")
    if len(text) > _MAX_LENGTH or not dot:
        raise InvalidQueryError("cursor", f"malformed cursor; {_HOW_TO_FIX}")
    try:
        raw, mac = _unb64(body), _unb64(signature)
    except (binascii.Error, ValueError):
        raise InvalidQueryError("cursor", f"malformed cursor; {_HOW_TO_FIX}") from None
    if not hmac.compare_digest(mac, _mac(key, workspace_id, raw)):
        raise InvalidQueryError(
            "cursor",
            "this cursor was not issued by this server for this workspace (it was changed, "
            f"or the server's cursor secret was rotated since); {_HOW_TO_FIX}",
        )
    return raw


def _mac(key: bytes, workspace_id: str, raw: bytes) -> bytes:
    message = _DOMAIN + workspace_id.encode() + b"\n" + raw
    return hmac.digest(key, message, hashlib.sha256)[:_MAC_BYTES]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode("ascii") + b"=" * (-len(text) % 4))


def query_fingerprint(parts: dict[str, Any]) -> str:
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:12]
