"""The live tail's event ids: opaque, per workspace.

A live event's resume point is its store position, which counts every workspace's events: sent
as it is, the gap between two of A's ids would tell A how much B wrote in between. So the id a
watcher sees is the position and a tag of its workspace, encrypted as one AES block under a
key derived from the installation's cursor secret: a pseudorandom permutation of the pair, so
ids reveal neither positions nor their order, and an id is accepted back only in the workspace
it was made for. ``0`` means from the beginning. Other positions are refused: resuming at
positions of its choosing and watching which of its events follow, a client could find each
event's position by bisection, which is what the ids hide.

Failure semantics: an id that does not decrypt to this workspace is an ``InvalidQueryError``
(a 400), like any malformed one. Rotating the cursor secret retires every live id: a client
that resumes with an old one is told so and reconnects without it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from auditcore.errors import InvalidQueryError

_OPAQUE = re.compile(r"[A-Za-z0-9_-]{22}")
"""One AES block, base64url without padding."""
HEADER_PATTERN = r"^(0|[A-Za-z0-9_-]{22})?$"
"""What the OpenAPI document says a ``Last-Event-ID`` is."""


class LiveIds:
    """Makes and reads one workspace's live event ids."""

    def __init__(self, cursor_key: bytes, workspace_id: str) -> None:
        key = hmac.new(cursor_key, b"auditcore live event ids", hashlib.sha256).digest()
        # One block at a time, no chaining: ECB on a single block is the bare permutation.
        self._cipher = Cipher(algorithms.AES(key), modes.ECB())  # noqa: S305
        self._tag = hashlib.sha256(workspace_id.encode()).digest()[:8]

    def make(self, position: int) -> str:
        encryptor = self._cipher.encryptor()
        block = encryptor.update(position.to_bytes(8, "big") + self._tag) + encryptor.finalize()
        return base64.urlsafe_b64encode(block).decode().rstrip("=")

    def read(self, text: str | None) -> int | None:
        """``Last-Event-ID`` as a store position; empty means none (browsers send none)."""
        if text is None or not text.strip():
            return None
        text = text.strip()
        if text == "0":
            return 0
        if _OPAQUE.fullmatch(text):
            try:
                raw = base64.urlsafe_b64decode(text + "==")
            except binascii.Error:
                raw = b""
            if len(raw) == 16:
                decryptor = self._cipher.decryptor()
                block = decryptor.update(raw) + decryptor.finalize()
                if hmac.compare_digest(block[8:], self._tag):
                    return int.from_bytes(block[:8], "big")
        raise InvalidQueryError(
            "Last-Event-ID", "must be the `id` of an event of this stream (or 0: from the start)"
        )
