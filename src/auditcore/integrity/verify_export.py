#!/usr/bin/env python3
"""Check an auditcore proof export offline: needs Python 3.11+ and ``cryptography`` only.

    python verify_export.py --public-key log.pub acme.proof.json [--previous old.checkpoint]

It checks that the checkpoint in the proof document is signed by the key you trust (get the
public key from the log's operator or where they publish it, never from the export itself),
recomputes every event line's leaf (RFC 9162: SHA-256 over 0x00 and the leaf data auditcore
defines), and rebuilds the Merkle tree from the left subtrees in the proof document and those
leaves: the result must be the checkpoint's root. That holds only if the events file is exactly
the workspace's log from ``from_size`` to ``to_size``: nothing added, removed, changed or
reordered. With ``--previous`` (a checkpoint of size ``from_size``, e.g. from your last export),
it also checks that this export continues that one.

Exit status 0: verified; 1: the export does not verify (the first problem is printed);
2: a file or key could not be read.

This file deliberately repeats auditcore's hashing, leaf and note formats instead of importing
them: an auditor should not have to trust (or install) the software that made the export.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import struct
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

FORMAT = "auditcore-export-proof/1"
_HEAD = struct.Struct(">BQ16sq")


class InvalidExportError(Exception):
    """The export does not verify."""


# RFC 9162 §2.1.1 hashing.


def _leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _root(peaks: list[bytes]) -> bytes:
    if not peaks:
        return hashlib.sha256(b"").digest()
    root = peaks[-1]
    for left in reversed(peaks[:-1]):
        root = _node_hash(left, root)
    return root


class _Tree:
    """A tree of ``size`` leaves as its perfect subtrees' hashes, largest first."""

    def __init__(self, size: int, peaks: list[bytes]) -> None:
        if len(peaks) != size.bit_count():
            raise InvalidExportError(f"{len(peaks)} left subtrees cannot tile {size} leaves")
        self.size, self.peaks = size, list(peaks)

    def append(self, leaf: bytes) -> None:
        merged, index = leaf, self.size
        while index & 1:
            merged, index = _node_hash(self.peaks.pop(), merged), index >> 1
        self.peaks.append(merged)
        self.size += 1


# auditcore's leaf data (see auditcore/integrity/leaf.py).


def _leaf_data(index: int, stream_id: str, version: int, action: str, state: bytes) -> bytes:
    stream = bytes.fromhex(stream_id.replace("-", ""))
    if len(stream) != 16:
        raise ValueError("the stream id is not a UUID")
    topic = action.encode()
    return b"".join(
        (
            _HEAD.pack(1, index, stream, version),
            len(topic).to_bytes(4, "big"),
            topic,
            len(state).to_bytes(4, "big"),
            state,
        )
    )


def _line_leaf(number: int, line: bytes) -> tuple[int, bytes]:
    """An events-file line's index and leaf hash (its state's bytes taken verbatim)."""
    try:
        index, stream_id, version, action, state = _parse_line(line)
        return index, _leaf_hash(_leaf_data(index, stream_id, version, action, state))
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise InvalidExportError(f"events line {number} is malformed: {error}") from None


def _parse_line(line: bytes) -> tuple[int, str, int, str, bytes]:
    item = json.loads(line)
    columns = ("index", "stream_id", "version", "action")
    head = json.dumps(
        {key: item[key] for key in columns}, separators=(",", ":"), ensure_ascii=False
    )[:-1].encode()
    if "state_base64" in item:
        state = base64.b64decode(item["state_base64"], validate=True)
        expected = {*columns, "state_base64"}
    else:
        prefix = head + b',"state":'
        body = line.rstrip(b"\n")
        if not body.startswith(prefix) or not body.endswith(b"}"):
            raise ValueError("not in the export's line layout")
        state = body[len(prefix) : -1]
        if json.loads(state) != item["state"]:
            raise ValueError("its state is not the line's last member")
        expected = {*columns, "state"}
    if set(item) != expected:
        raise ValueError(f"unexpected members {sorted(set(item) ^ expected)}")
    return item["index"], item["stream_id"], item["version"], item["action"], state


# C2SP signed notes and checkpoints (see auditcore/integrity/note.py).


def _key_id(name: str, public_key: bytes) -> int:
    return int.from_bytes(hashlib.sha256(name.encode() + b"\n\x01" + public_key).digest()[:4])


def _read_key(text: str) -> tuple[str, bytes]:
    """A verifier key ``name+keyid+base64(0x01 || key)``: its name and Ed25519 key."""
    parts = text.strip().split("+", 2)
    if len(parts) != 3:
        raise ValueError("a verifier key looks like name+1234abcd+base64")
    name, hex_id, material = parts
    raw = base64.b64decode(material, validate=True)
    if len(raw) != 33 or raw[0] != 1:
        raise ValueError("not an Ed25519 verifier key")
    if f"{_key_id(name, raw[1:]):08x}" != hex_id:
        raise ValueError("its key ID does not match its name and key")
    return name, raw[1:]


def _open_checkpoint(note: str, keys: list[tuple[str, bytes]]) -> tuple[str, int, bytes, str]:
    """Check a signed checkpoint; return its origin, size, root hash and signing time line."""
    if any(ord(char) < 0x20 and char != "\n" for char in note) or not note.endswith("\n"):
        raise InvalidExportError("the checkpoint is not a well-formed signed note")
    split = note.rfind("\n\n")
    if split < 0:
        raise InvalidExportError("the checkpoint has no signatures")
    text, signature_lines = note[: split + 1], note[split + 2 :].splitlines()
    lines = text.split("\n")[:-1]
    if len(lines) < 3 or not all(lines):
        raise InvalidExportError("the checkpoint's text is not origin, size and root hash")
    origin, size, root = lines[:3]
    # Trusted: each key as given, and as derived for this log (auditcore signs workspace W's
    # log as "<key name>/W").
    trusted: dict[tuple[str, int], bytes] = {}
    for name, key in keys:
        for key_name in (name, origin if origin.startswith(name + "/") else name):
            trusted[(key_name, _key_id(key_name, key))] = key
    verified = False
    for line in signature_lines:
        name, _, blob = line.removeprefix("\u2014 ").partition(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except binascii.Error:
            raise InvalidExportError("a checkpoint signature is not base64") from None
        signer = trusted.get((name, int.from_bytes(raw[:4])))
        if signer is None:
            continue
        try:
            Ed25519PublicKey.from_public_bytes(signer).verify(raw[4:], text.encode())
        except InvalidSignature:
            raise InvalidExportError(
                f"the checkpoint's signature by {name} does not verify"
            ) from None
        verified = True
    if not verified:
        raise InvalidExportError("the checkpoint is not signed by the key you trust")
    if not size.isdigit() or (size != "0" and size.startswith("0")):
        raise InvalidExportError("the checkpoint's tree size is not a number")
    times = [line[5:] for line in lines[3:] if line.startswith("time ") and line[5:].isdigit()]
    signed = (
        f"signed {datetime.fromtimestamp(int(times[0]), UTC).isoformat()}"
        if times
        else "signing time not given"
    )
    return origin, int(size), base64.b64decode(root, validate=True), signed


def verify(
    proof_path: Path, keys: list[tuple[str, bytes]], previous: str | None = None
) -> dict[str, Any]:
    try:
        document = json.loads(proof_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InvalidExportError(f"cannot read the proof document: {error}") from None
    if document.get("format") != FORMAT:
        raise InvalidExportError(f"not an auditcore proof document ({FORMAT})")
    origin, size, root, signed = _open_checkpoint(document["checkpoint"], keys)
    from_size, to_size = document["from_size"], document["to_size"]
    if size != to_size or origin != document["origin"]:
        raise InvalidExportError(
            "the proof document and its checkpoint disagree on the log or its size"
        )
    left = [base64.b64decode(item, validate=True) for item in document["left_subtrees"]]
    tree = _Tree(from_size, left)
    from_root = _root(tree.peaks)
    events_path = proof_path.parent / document["events_file"]
    try:
        with events_path.open("rb") as events:
            for number, line in enumerate(events, start=1):
                index, leaf = _line_leaf(number, line)
                if index != tree.size:
                    raise InvalidExportError(
                        f"events line {number} is position {index}, expected {tree.size}: "
                        "events were removed, added or reordered"
                    )
                tree.append(leaf)
    except OSError as error:
        raise InvalidExportError(f"cannot read the events file: {error}") from None
    if tree.size != to_size:
        raise InvalidExportError(f"the events file ends at position {tree.size}, not {to_size}")
    if _root(tree.peaks) != root:
        raise InvalidExportError(
            "the events do not hash to the checkpoint's root: some event was changed "
            "(or the left subtrees are not this log's)"
        )
    for label, note in (
        ("from_checkpoint", document.get("from_checkpoint")),
        ("previous", previous),
    ):
        if note is None:
            continue
        previous_origin, previous_size, previous_root, _ = _open_checkpoint(note, keys)
        if previous_origin != origin or previous_size != from_size or previous_root != from_root:
            raise InvalidExportError(
                f"the {label} checkpoint (size {previous_size}) is not where this export "
                f"starts (size {from_size}): the log was rewritten in between, or it is "
                "another log's"
            )
    return {
        "origin": origin,
        "from_size": from_size,
        "to_size": to_size,
        "events": to_size - from_size,
        "signed": signed,
        "from_root": base64.b64encode(from_root).decode(),
        "root": base64.b64encode(root).decode(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("proof", type=Path, help="the export's .proof.json document")
    parser.add_argument(
        "--public-key", action="append", required=True, type=Path, help="trusted key file"
    )
    parser.add_argument("--previous", type=Path, help="a checkpoint where this export starts")
    args = parser.parse_args(argv)
    try:
        keys = [_read_key(path.read_text(encoding="utf-8")) for path in args.public_key]
        previous = args.previous.read_text(encoding="utf-8") if args.previous else None
    except (OSError, ValueError, binascii.Error) as error:
        print(f"error: cannot read a key or checkpoint: {error}", file=sys.stderr)
        return 2
    try:
        result = verify(args.proof, keys, previous)
    except InvalidExportError as error:
        print(f"NOT VERIFIED: {error}")
        return 1
    print(
        f"VERIFIED: {result['events']} events, positions {result['from_size']} to "
        f"{result['to_size'] - 1} of {result['origin']}, exactly as in its checkpoint "
        f"({result['signed']}, root {result['root']}); the log before them hashes to "
        f"{result['from_root']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
