"""The master keys: read from a file or the environment, never stored by auditcore.

``AUDITCORE_MASTER_KEY_FILE`` (a file) or ``AUDITCORE_MASTER_KEY`` (the environment) holds
base64 keys of 32 bytes, one per line (or comma-separated), the current one first and older
ones after it while a rotation is under way. Neither set: personal data is not encrypted.

Failure semantics: a file that cannot be read or a key that is not 32 bytes of base64 raises
``MasterKeyError`` (one line); so does a key that is not the one the stored keys need.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from auditcore.errors import ConfigurationError

MASTER_KEY_ENV = "AUDITCORE_MASTER_KEY"
MASTER_KEY_FILE_ENV = "AUDITCORE_MASTER_KEY_FILE"


class MasterKeyError(ConfigurationError):
    """The master key is missing, malformed, or not the one the data keys were wrapped with."""


@dataclass(frozen=True)
class MasterKeys:
    """The master keys this process holds: ``keys[0]`` wraps new data keys; every one of them
    unwraps (a rotation in progress). Empty: encryption is off."""

    keys: tuple[bytes, ...] = ()
    source: str = f"{MASTER_KEY_FILE_ENV} or {MASTER_KEY_ENV}"

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @property
    def current_id(self) -> str:
        return master_id(self.keys[0])

    def by_id(self, wanted: str) -> bytes:
        for key in self.keys:
            if master_id(key) == wanted:
                return key
        if not self.keys:
            raise MasterKeyError(
                "the event store holds encrypted personal data, but no master key is set: "
                f"set {MASTER_KEY_FILE_ENV} (a file) or {MASTER_KEY_ENV}"
            )
        raise MasterKeyError(
            f"the master key in {self.source} (id {self.current_id}) is not the one that "
            f"encrypted the subjects' keys (id {wanted}): give the right key, or list both "
            "while rotating"
        )

    @classmethod
    def parse(cls, text: str, source: str) -> MasterKeys:
        """Base64 keys of 32 bytes separated by newlines or commas, the current one first
        (``#`` starts a comment)."""
        keys: list[bytes] = []
        words = [w for line in text.splitlines() for w in line.split("#", 1)[0].split(",")]
        for word in (w.strip() for w in words):
            if not word:
                continue
            standard = word.replace("-", "+").replace("_", "/")  # URL-safe base64 too
            try:
                key = base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
            except (binascii.Error, ValueError):
                key = b""
            if len(key) != 32:
                raise MasterKeyError(
                    f"{source}: a master key must be 32 random bytes in base64 (make one with "
                    "`auditcore keys new-master`)"
                )
            keys.append(key)
        if not keys:
            raise MasterKeyError(f"{source} holds no master key")
        return cls(tuple(keys), source)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> MasterKeys:
        env = os.environ if environ is None else environ
        path = env.get(MASTER_KEY_FILE_ENV)
        if path:
            try:
                text = Path(path).read_text(encoding="ascii")
            except (OSError, UnicodeDecodeError) as error:
                reason = error.strerror if isinstance(error, OSError) else "not ASCII"
                raise MasterKeyError(
                    f"cannot read the master key file {MASTER_KEY_FILE_ENV}={path}: {reason}"
                ) from None
            return cls.parse(text, f"{MASTER_KEY_FILE_ENV}={path}")
        if env.get(MASTER_KEY_ENV):
            return cls.parse(env[MASTER_KEY_ENV], MASTER_KEY_ENV)
        return cls()


def master_id(key: bytes) -> str:
    """A short public name for a master key (it reveals nothing of the key)."""
    return hashlib.sha256(b"auditcore master key\0" + key).hexdigest()[:16]


def new_master_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """Whether a master key is set (without reading it)."""
    env = os.environ if environ is None else environ
    return bool(env.get(MASTER_KEY_FILE_ENV) or env.get(MASTER_KEY_ENV))
