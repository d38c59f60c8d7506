"""The integrity log's settings: the signing key, how often to sign, where to publish."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from auditcore.errors import ConfigurationError
from auditcore.integrity.note import NoteError, SignerKey, VerifierKey

SIGNING_KEY_VARIABLE = "AUDITCORE_SIGNING_KEY"
PUBLIC_KEY_VARIABLE = "AUDITCORE_PUBLIC_KEY"
CHECKPOINT_DIR_VARIABLE = "AUDITCORE_CHECKPOINT_DIR"
INTERVAL_VARIABLE = "AUDITCORE_CHECKPOINT_INTERVAL"
EVENTS_VARIABLE = "AUDITCORE_CHECKPOINT_EVENTS"


@dataclass(frozen=True)
class IntegritySettings:
    """``signing_key``: the private key file (``auditcore integrity keygen`` writes one);
    without it the logs are kept but no checkpoint is signed. ``public_keys``: verifier key
    files to trust when verifying, besides the signing key's own (``AUDITCORE_PUBLIC_KEY``:
    paths separated by ``:``, e.g. the old and the new key after a rotation). A checkpoint is
    signed for each changed workspace every ``checkpoint_interval`` seconds (60) or as soon as
    ``checkpoint_events`` events (10,000) have been logged since the last one, whichever comes
    first; each is also written to ``checkpoint_dir`` if set."""

    signing_key: Path | None = None
    public_keys: tuple[Path, ...] = ()
    checkpoint_dir: Path | None = None
    checkpoint_interval: float = 60.0
    checkpoint_events: int = 10_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> IntegritySettings:
        def path(name: str) -> Path | None:
            value = environ.get(name)
            return Path(value) if value else None

        def number(name: str, default: float) -> float:
            value = environ.get(name)
            try:
                parsed = float(value) if value else default
            except ValueError:
                parsed = -1
            if parsed <= 0:
                raise ConfigurationError(f"{name}={value!r}: give a positive number")
            return parsed

        return cls(
            signing_key=path(SIGNING_KEY_VARIABLE),
            public_keys=tuple(
                Path(item)
                for item in environ.get(PUBLIC_KEY_VARIABLE, "").split(os.pathsep)
                if item
            ),
            checkpoint_dir=path(CHECKPOINT_DIR_VARIABLE),
            checkpoint_interval=number(INTERVAL_VARIABLE, cls.checkpoint_interval),
            checkpoint_events=int(number(EVENTS_VARIABLE, cls.checkpoint_events)),
        )

    def signer(self) -> SignerKey | None:
        if self.signing_key is None:
            return None
        return read_signer(self.signing_key)

    def trusted_keys(self) -> list[VerifierKey]:
        """The verifier keys configured here (the public key files', the signing key's)."""
        keys = [read_verifier(path) for path in self.public_keys]
        signer = self.signer()
        if signer is not None:
            keys.append(signer.verifier())
        return keys


def read_signer(path: Path) -> SignerKey:
    try:
        return SignerKey.parse(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigurationError(
            f"cannot read the signing key {path} ({SIGNING_KEY_VARIABLE}): {error.strerror}. "
            "Make one with `auditcore integrity keygen`."
        ) from error
    except (NoteError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"{path} is not an auditcore signing key: {error}") from error


def read_verifier(path: Path) -> VerifierKey:
    """A verifier key file (``name+keyid+base64``), or a signing key file (its public half)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"cannot read the public key {path}: {error}") from error
    try:
        if text.startswith("PRIVATE+KEY+"):
            return SignerKey.parse(text).verifier()
        return VerifierKey.parse(text)
    except NoteError as error:
        raise ConfigurationError(
            f"{path} is not a verifier key (name+keyid+base64, as `auditcore integrity "
            f"keygen` prints): {error}"
        ) from error
