"""C2SP signed notes with Ed25519 keys, and transparency-log checkpoints as their text.

Followed exactly (c2sp.org/signed-note, c2sp.org/tlog-checkpoint; the same formats as
golang.org/x/mod/sumdb/note, whose test vectors the tests run):

- A signed note is UTF-8 text ending in a newline, a blank line, then one line per signature:
  ``— <key name> base64(4-byte key ID || signature)``. No control characters but newline.
- An Ed25519 key's ID is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``, big-endian.
- Verifier keys are ``<name>+<hex key ID>+base64(0x01 || public key)``; signer keys (the
  private key files) ``PRIVATE+KEY+<name>+<hex key ID>+base64(0x01 || 32-byte seed)``.
- Opening a note ignores signatures by unknown keys, rejects the note if a known key's
  signature fails, and rejects it if no known key signed it.
- A checkpoint's text is the log's origin, its tree size (decimal, no leading zeros) and its
  root hash (base64), one per line, then optional non-empty extension lines.

auditcore keeps one Merkle log per workspace, so one key pair signs many logs: the key file
names the installation's *log name*, and workspace W's checkpoints carry the origin
``<log name>/<W>`` and are signed under that same name (the spec's advice that the key name
match the origin), with the key ID computed for that name. ``VerifierKey.for_log`` derives a
workspace's verifier key from the installation's. The signing time travels in one extension
line, ``time <POSIX seconds>`` (the tlog-cosignature spelling), because the checkpoint records
(tree size, root hash, time); the spec discourages extension lines only because log monitors
cannot audit them, and none needs to audit this one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

ED25519 = 0x01
MAX_SIGNATURES = 100
_DASH = "\u2014 "
_PRIVATE_PREFIX = "PRIVATE+KEY+"


class NoteError(ValueError):
    """A malformed note, checkpoint or key, or a note no trusted key signed."""


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise NoteError(f"{what} is not valid base64") from None


def check_key_name(name: str) -> str:
    if not name or "+" in name or any(char.isspace() for char in name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")
    return name


def key_id(name: str, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True)
class VerifierKey:
    """An Ed25519 public key under a name: checks that name's signatures."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.public_key)

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        name, hex_id, public_key = _key_parts(text.strip(), "verifier")
        return _checked(cls(name, public_key), hex_id, "verifier")

    def encode(self) -> str:
        material = base64.b64encode(bytes([ED25519]) + self.public_key).decode()
        return f"{self.name}+{self.key_id:08x}+{material}"

    def for_log(self, workspace_id: str) -> VerifierKey:
        """The key under which workspace ``workspace_id``'s checkpoints are signed."""
        return VerifierKey(origin_for(self.name, workspace_id), self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@dataclass(frozen=True)
class SignerKey:
    """An Ed25519 private key under a name: what the follower signs checkpoints with."""

    name: str
    seed: bytes = field(repr=False)

    @classmethod
    def generate(cls, name: str) -> SignerKey:
        check_key_name(name)
        seed = Ed25519PrivateKey.generate().private_bytes(
            Encoding.Raw, PrivateFormat.Raw, NoEncryption()
        )
        return cls(name, seed)

    @classmethod
    def parse(cls, text: str) -> SignerKey:
        text = text.strip()
        if not text.startswith(_PRIVATE_PREFIX):
            raise NoteError("a signer key starts with PRIVATE+KEY+")
        name, hex_id, seed = _key_parts(text.removeprefix(_PRIVATE_PREFIX), "signer")
        key = cls(name, seed)
        _checked(key.verifier(), hex_id, "signer")
        return key

    def encode(self) -> str:
        material = base64.b64encode(bytes([ED25519]) + self.seed).decode()
        return f"{_PRIVATE_PREFIX}{self.name}+{self.verifier().key_id:08x}+{material}"

    def verifier(self) -> VerifierKey:
        public = self._private().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return VerifierKey(self.name, public)

    def for_log(self, workspace_id: str) -> SignerKey:
        return SignerKey(origin_for(self.name, workspace_id), self.seed)

    def sign(self, message: bytes) -> bytes:
        return self._private().sign(message)

    def _private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)


def _key_parts(text: str, kind: str) -> tuple[str, str, bytes]:
    """A key's ``name+hexid+base64(0x01 || 32 bytes)``: its name, hex ID and key bytes."""
    parts = text.split("+", 2)  # base64 may hold '+' too
    if len(parts) != 3 or len(parts[1]) != 8:
        raise NoteError(f"a {kind} key looks like name+1234abcd+base64")
    name, hex_id, material = parts
    check_key_name(name)
    raw = _b64decode(material, f"the {kind} key")
    if len(raw) != 33 or raw[0] != ED25519:
        raise NoteError(f"the {kind} key is not an Ed25519 key (type 0x01, 32 bytes)")
    return name, hex_id, raw[1:]


def _checked(key: VerifierKey, hex_id: str, kind: str) -> VerifierKey:
    if f"{key.key_id:08x}" != hex_id:
        raise NoteError(f"the {kind} key's ID {hex_id} does not match its name and key")
    return key


def origin_for(log_name: str, workspace_id: str) -> str:
    """Workspace ``workspace_id``'s log origin (and its checkpoints' key name)."""
    return check_key_name(f"{log_name}/{workspace_id}")


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        blob = base64.b64encode(self.key_id.to_bytes(4, "big") + self.signature).decode()
        return f"{_DASH}{self.name} {blob}\n"


@dataclass(frozen=True)
class Note:
    text: str
    signatures: tuple[Signature, ...]

    @classmethod
    def parse(cls, data: str | bytes) -> Note:
        if isinstance(data, bytes):
            try:
                data = data.decode("utf-8")
            except UnicodeDecodeError:
                raise NoteError("the note is not valid UTF-8") from None
        if any(ord(char) < 0x20 and char != "\n" for char in data):
            raise NoteError("the note holds control characters")
        split = data.rfind("\n\n")
        if split < 0 or not data.endswith("\n"):
            raise NoteError("a signed note is text, a blank line, then signature lines")
        text, lines = data[: split + 1], data[split + 2 :].splitlines()
        if not lines or len(lines) > MAX_SIGNATURES:
            raise NoteError(f"a signed note has 1 to {MAX_SIGNATURES} signature lines")
        signatures = []
        for line in lines:
            name, space, blob = line.removeprefix(_DASH).partition(" ")
            if not line.startswith(_DASH) or not space or " " in blob:
                raise NoteError(f"malformed signature line {line!r}")
            check_key_name(name)
            raw = _b64decode(blob, "a signature")
            if len(raw) < 5:
                raise NoteError("a signature is too short")
            signatures.append(Signature(name, int.from_bytes(raw[:4], "big"), raw[4:]))
        return cls(text, tuple(signatures))

    def encode(self) -> str:
        return self.text + "\n" + "".join(signature.line() for signature in self.signatures)

    def verified_by(self, keys: list[VerifierKey]) -> list[VerifierKey]:
        """The known keys whose signatures on this note verify. Signatures by unknown keys
        are ignored; a known key's failing signature, or no known key at all, is an error."""
        known = {(key.name, key.key_id): key for key in keys}
        verified = []
        for signature in self.signatures:
            key = known.get((signature.name, signature.key_id))
            if key is None:
                continue
            if not key.verify(self.text.encode(), signature.signature):
                raise NoteError(f"the signature by {key.name}+{key.key_id:08x} does not verify")
            verified.append(key)
        if not verified:
            names = ", ".join(sorted({s.name for s in self.signatures})) or "nobody"
            raise NoteError(f"no trusted key signed this note (signed by {names})")
        return verified


def sign_note(text: str, *signers: SignerKey) -> str:
    if not text.endswith("\n"):
        raise NoteError("a note's text ends with a newline")
    signatures = tuple(
        Signature(signer.name, signer.verifier().key_id, signer.sign(text.encode()))
        for signer in signers
    )
    note = Note(text, signatures)
    Note.parse(note.encode())  # never emit what the format forbids
    return note.encode()


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size and root hash, and when it was signed."""

    origin: str
    size: int
    root: bytes
    signed_at: datetime | None = None

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode()]
        if self.signed_at is not None:
            lines.append(f"time {int(self.signed_at.timestamp())}")
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise NoteError("a checkpoint is at least three non-empty lines")
        origin, size, root, *extensions = lines[:-1]
        if not size.isdigit() or not size.isascii() or (size != "0" and size[0] == "0"):
            raise NoteError(f"the checkpoint's tree size {size!r} is not a decimal number")
        root_hash = _b64decode(root, "the checkpoint's root hash")
        if len(root_hash) != 32:
            raise NoteError("the checkpoint's root hash is not a SHA-256 hash")
        signed_at = None
        for line in extensions:
            if line.startswith("time ") and line[5:].isdigit():
                signed_at = datetime.fromtimestamp(int(line[5:]), UTC)
        return cls(origin, int(size), root_hash, signed_at)

    def sign(self, signer: SignerKey) -> str:
        return sign_note(self.text(), signer)


def open_checkpoint(note_text: str, keys: list[VerifierKey]) -> tuple[Checkpoint, Note]:
    """Parse a signed checkpoint and check its signature; ``NoteError`` if anything is off."""
    note = Note.parse(note_text)
    note.verified_by(keys)
    return Checkpoint.parse(note.text), note
