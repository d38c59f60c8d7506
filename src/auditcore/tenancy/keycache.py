"""Verified API keys, remembered for a moment: authentication without a database round trip on
every request.

A key that verified is remembered for ``ttl`` seconds (1 by default), under the SHA-256 of the
whole presented token (the token itself is never kept); within that time, presenting exactly
that token again answers the remembered principal. Only successes are remembered: an invalid
key goes to the database every time (and to the failure throttle), so a key made valid a
moment ago is never refused from memory.

Failure semantics: a key revoked by any process (the CLI writes to the database) stops
authenticating at most ``ttl`` seconds later (the API's promise is 2 s); one revoked through
this process (a viewer token's revocation route) at once (``forget``). The cache holds at
most ``capacity`` keys; when full, expired entries go first, then everything (a burst of
distinct valid keys costs database lookups, never memory). Errors of the database propagate,
as without the cache.
"""

from __future__ import annotations

import hashlib
import threading
import time

from auditcore.tenancy.directory import Directory, Principal

KEY_CACHE_SECONDS = 1.0
"""How long a verified key is trusted without asking the database again."""


class VerifiedKeys:
    """``Directory.authenticate`` with a short memory of successes (see the module header)."""

    def __init__(
        self, directory: Directory, ttl: float = KEY_CACHE_SECONDS, capacity: int = 10_000
    ) -> None:
        self.directory = directory
        self.ttl = ttl
        self.capacity = capacity
        self._entries: dict[bytes, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def remembered(self, token: str) -> Principal | None:
        """The key's principal if it verified within ``ttl`` (no database: safe anywhere,
        the event loop included); None means "ask ``authenticate``", not "refused"."""
        entry = self._entries.get(_digest(token))
        if entry is not None and entry[1] > time.monotonic():
            return entry[0]
        return None

    def authenticate(self, token: str) -> Principal | None:
        """The key's principal, or None for a malformed, unknown or revoked key."""
        remembered = self.remembered(token)
        if remembered is not None:
            return remembered
        digest, now = _digest(token), time.monotonic()
        principal = self.directory.authenticate(token)
        with self._lock:
            if principal is None:
                self._entries.pop(digest, None)
                return None
            if len(self._entries) >= self.capacity:
                self._evict(now)
            # The moment it was looked up bounds how stale it can be, not when it is stored.
            self._entries[digest] = (principal, now + self.ttl)
        return principal

    def forget(self) -> None:
        """Remember nothing: a revocation made by this process takes effect at its next
        request, not ``ttl`` later."""
        with self._lock:
            self._entries = {}

    def _evict(self, now: float) -> None:
        self._entries = {d: e for d, e in self._entries.items() if e[1] > now}
        if len(self._entries) >= self.capacity:
            self._entries = {}


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
