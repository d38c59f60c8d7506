"""Exports an auditor can check offline: one workspace's events between two tree sizes, the
signed checkpoint of the larger size, and what is needed to tie the one to the other.

The events file holds one line per leaf ``from_size ≤ index < to_size``, in log order, each
the event's stored columns with its state exactly as stored (so its leaf can be recomputed):

    {"index":17,"stream_id":"…","version":1,"action":"incident.opened","state":{…}}

(``"state"`` is the last member and its bytes are the stored bytes; a state that is not a JSON
object on one line travels as ``"state_base64"`` instead.) The proof document gives the hashes
of the perfect subtrees that tile the leaves before ``from_size``; with them, the leaves
recomputed from the lines must hash to the checkpoint's root — which holds only if the lines
are exactly the log's leaves ``[from_size, to_size)``: nothing added, removed, changed or
reordered. ``verify_export.py`` (standalone, needs only ``cryptography``) does that check.

Failure semantics: every line is checked against its stored leaf while it is written; an event
that no longer matches its leaf stops the export with an error (run ``auditcore verify``).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import orjson

from auditcore.errors import AuditcoreError, InvalidQueryError, NotFoundError
from auditcore.integrity.leaf import event_leaf_hash
from auditcore.integrity.log import IntegrityLog, StoredCheckpoint
from auditcore.integrity.merkle import perfect_subtrees
from auditcore.integrity.proofs import b64
from auditcore.projection.log import LoggedEvent

FORMAT = "auditcore-export-proof/1"
PAGE = 5_000


class ExportTamperedError(AuditcoreError):
    """A stored event no longer matches its logged leaf: the export would not verify."""


def verifier_source() -> str:
    """The standalone offline verifier's source code."""
    return (files("auditcore.integrity") / "verify_export.py").read_text(encoding="utf-8")


def export_line(index: int, event: LoggedEvent) -> bytes:
    head = orjson.dumps(
        {
            "index": index,
            "stream_id": event.stream_id,
            "version": event.version,
            "action": event.action,
        }
    )[:-1]
    state = bytes(event.state)
    if _embeddable(state):
        return head + b',"state":' + state + b"}\n"
    return head + b',"state_base64":"' + b64(state).encode() + b'"}\n'


def _embeddable(state: bytes) -> bool:
    if b"\n" in state or b"\r" in state:
        return False
    try:
        return isinstance(orjson.loads(state), dict)
    except orjson.JSONDecodeError:
        return False


@dataclass(frozen=True)
class ProofExport:
    log: IntegrityLog
    workspace_id: str
    from_size: int
    checkpoint: StoredCheckpoint
    from_checkpoint: StoredCheckpoint | None

    @property
    def to_size(self) -> int:
        return self.checkpoint.size

    def lines(self) -> Iterator[bytes]:
        """The events file, a page of lines per chunk."""
        for start in range(self.from_size, self.to_size, PAGE):
            leaves = self.log.leaves_of(self.workspace_id, start, min(start + PAGE, self.to_size))
            events = {e.position: e for e in self.log.events_at([x.position for x in leaves])}
            chunk = []
            for expected, leaf in enumerate(leaves, start):
                event = events.get(leaf.position)
                if (
                    leaf.leaf_index != expected
                    or event is None
                    or leaf.hash
                    != event_leaf_hash(
                        leaf.leaf_index, event.stream_id, event.version, event.action, event.state
                    )
                ):
                    raise ExportTamperedError(
                        f"the event at position {expected} of workspace {self.workspace_id} "
                        "does not match its logged leaf; run `auditcore verify` to see what "
                        "changed"
                    )
                chunk.append(export_line(leaf.leaf_index, event))
            if len(leaves) < min(PAGE, self.to_size - start):
                raise ExportTamperedError(
                    f"the log of workspace {self.workspace_id} lacks leaves below "
                    f"{self.to_size}; run `auditcore verify`"
                )
            yield b"".join(chunk)

    def document(self, events_file: str, log_key: str | None) -> dict[str, Any]:
        peaks = perfect_subtrees(0, self.from_size)
        found = self.log.node_hashes(self.workspace_id, peaks)
        if len(found) != len(peaks):
            raise ExportTamperedError(
                f"the log of workspace {self.workspace_id} lacks nodes below {self.from_size}; "
                "run `auditcore verify`"
            )
        return {
            "format": FORMAT,
            "workspace_id": self.workspace_id,
            "origin": self.checkpoint.key_name,
            "from_size": self.from_size,
            "to_size": self.to_size,
            "events_file": events_file,
            "left_subtrees": [b64(found[peak]) for peak in peaks],
            "checkpoint": self.checkpoint.note,
            "from_checkpoint": self.from_checkpoint.note if self.from_checkpoint else None,
            "log_key": log_key,
            "how_to_check": "python verify_export.py --public-key KEY_FILE PROOF_FILE "
            "(get the public key from the log's operator, not from this file)",
        }


def proof_export(
    log: IntegrityLog, workspace_id: str, from_size: int = 0, to_size: int | None = None
) -> ProofExport:
    """An export of leaves ``[from_size, to_size)``; ``to_size`` must be a signed checkpoint's
    size (by default the latest one)."""
    if to_size is None:
        checkpoint = log.latest_checkpoint(workspace_id)
        if checkpoint is None:
            raise NotFoundError(
                f"workspace {workspace_id!r} has no signed checkpoint yet: set "
                "AUDITCORE_SIGNING_KEY (auditcore integrity keygen makes one) and run the "
                "integrity follower, or sign now with `auditcore integrity sign`",
            )
    else:
        checkpoint = log.checkpoint_at(workspace_id, to_size)
        if checkpoint is None:
            sizes = [c.size for c in log.checkpoints(workspace_id)][-5:]
            raise NotFoundError(
                f"to_size: no signed checkpoint has size {to_size}; recent ones: {sizes}"
            )
    if not 0 <= from_size <= checkpoint.size:
        if to_size is not None:
            raise InvalidQueryError("from_size", f"give 0 to {checkpoint.size}")
        raise NotFoundError(f"from_size: the latest signed checkpoint has size {checkpoint.size}")
    previous = log.checkpoint_at(workspace_id, from_size) if from_size else None
    return ProofExport(log, workspace_id, from_size, checkpoint, previous)


README = """An auditcore proof export of workspace {workspace}: its events at log positions
{start} to {end}, with the signed checkpoint of size {size}.

Check it offline (Python 3.11+ and the `cryptography` package):

    python verify_export.py --public-key LOG_KEY.pub proof.json

Get the log's public key from its operator (where they publish it), not from this archive.
verify_export.py is auditcore's standalone verifier; compare it with the one your auditcore
release ships (auditcore integrity verifier) if you did not get it from there yourself.
"""


class _Sink:
    """What zipfile writes into: collected, then handed out chunk by chunk."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes, /) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def zip_chunks(export: ProofExport, log_key: str | None) -> Iterator[bytes]:
    """The export as one ZIP archive, streamed: events.jsonl, checkpoint, proof.json,
    verify_export.py and README.txt."""
    document = export.document("events.jsonl", log_key)  # a damaged log fails before any byte
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("events.jsonl", "w", force_zip64=True) as entry:
            for chunk in export.lines():
                entry.write(chunk)
                yield sink.take()
        archive.writestr("checkpoint", export.checkpoint.note)
        archive.writestr("proof.json", orjson.dumps(document, option=orjson.OPT_INDENT_2))
        archive.writestr("verify_export.py", verifier_source())
        archive.writestr(
            "README.txt",
            README.format(
                workspace=export.workspace_id,
                start=export.from_size,
                end=export.to_size - 1,
                size=export.to_size,
            ),
        )
    yield sink.take()
