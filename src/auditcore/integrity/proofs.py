"""Proofs from the stored logs: an event's inclusion in the latest checkpoint, and the
consistency of two tree sizes. Each proof is checked here before it is handed out, and the
event's leaf is recomputed from the store, so a proof says whether the event as stored *now*
is the event that was logged."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from auditcore.errors import AuditcoreError, InvalidQueryError, NotFoundError
from auditcore.integrity.leaf import changed_fields, event_leaf_hash, field_digests, read_state
from auditcore.integrity.log import IntegrityLog, StoredCheckpoint
from auditcore.integrity.merkle import (
    NodeFetcher,
    ProofError,
    consistency_ranges,
    inclusion_ranges,
    range_hashes,
    root_at,
    verify_consistency,
    verify_inclusion,
)
from auditcore.integrity.note import NoteError, VerifierKey, open_checkpoint


class ProofUnavailableError(AuditcoreError):
    """The stored log is damaged where a proof needs it."""


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def checkpoint_json(checkpoint: StoredCheckpoint) -> dict[str, Any]:
    return {
        "workspace_id": checkpoint.workspace_id,
        "origin": checkpoint.key_name,
        "tree_size": checkpoint.size,
        "root_hash": b64(checkpoint.root),
        "signed_at": datetime.fromtimestamp(checkpoint.signed_at, UTC).isoformat(),
        "key": f"{checkpoint.key_name}+{checkpoint.key_id:08x}",
        "checkpoint": checkpoint.note,
    }


@dataclass(frozen=True)
class EventProof:
    """Where an event stands: ``proven`` (included in the latest signed checkpoint, and
    stored exactly as logged), ``pending`` (logged or recorded after it), or ``failed``."""

    status: str
    detail: str
    workspace_id: str
    event_id: UUID
    leaf_index: int | None = None
    leaf_hash: bytes | None = None
    proof: Sequence[bytes] = ()
    checkpoint: StoredCheckpoint | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": self.status,
            "detail": self.detail,
            "event_id": str(self.event_id),
            "leaf_index": self.leaf_index,
        }
        if self.checkpoint is not None and self.leaf_hash is not None:
            body |= {
                "tree_size": self.checkpoint.size,
                "leaf_hash": b64(self.leaf_hash),
                "inclusion_proof": [b64(item) for item in self.proof],
                "checkpoint": checkpoint_json(self.checkpoint),
            }
        return body


def _fetch(log: IntegrityLog, workspace_id: str) -> NodeFetcher:
    return lambda nodes: log.node_hashes(workspace_id, nodes)


def event_proof(
    log: IntegrityLog, workspace_id: str, event_id: UUID, keys: Sequence[VerifierKey]
) -> EventProof:
    """The inclusion proof of one event against its workspace's latest checkpoint."""
    leaf = log.leaf_for_event(workspace_id, event_id)
    if leaf is None:
        return EventProof(
            "pending", "recorded, not logged yet: the integrity follower has not reached it",
            workspace_id, event_id,
        )  # fmt: skip
    checkpoint = log.latest_checkpoint(workspace_id)
    if checkpoint is None or leaf.leaf_index >= checkpoint.size:
        return EventProof(
            "pending",
            f"logged at position {leaf.leaf_index}; the next signed checkpoint will cover it",
            workspace_id,
            event_id,
            leaf.leaf_index,
        )
    failed = _failure(log, workspace_id, leaf.position, leaf.leaf_index, leaf.hash, leaf.fields)
    proof: list[bytes] = []
    if failed is None:
        try:
            proof = range_hashes(
                inclusion_ranges(leaf.leaf_index, checkpoint.size), _fetch(log, workspace_id)
            )
            verify_inclusion(leaf.leaf_index, checkpoint.size, leaf.hash, proof, checkpoint.root)
            if keys:
                open_checkpoint(
                    checkpoint.note, [*keys, *(key.for_log(workspace_id) for key in keys)]
                )
        except (LookupError, ProofError, NoteError) as error:
            failed = f"the log does not prove this event: {error}"
    if failed is not None:
        return EventProof("failed", failed, workspace_id, event_id, leaf.leaf_index, leaf.hash)
    signed = datetime.fromtimestamp(checkpoint.signed_at, UTC).isoformat()
    return EventProof(
        "proven",
        f"position {leaf.leaf_index} of {checkpoint.size} in the checkpoint signed {signed}",
        workspace_id,
        event_id,
        leaf.leaf_index,
        leaf.hash,
        proof,
        checkpoint,
    )


def _failure(
    log: IntegrityLog, workspace_id: str, position: int, index: int, logged: bytes, fields: bytes
) -> str | None:
    """Why the event as stored now is not the logged one (None if it is)."""
    found = log.events_at([position])
    if not found:
        return "the logged event is gone from the store"
    event = found[0]
    if event_leaf_hash(index, event.stream_id, event.version, event.action, event.state) == logged:
        return None
    source = read_state(event.state)
    changed = changed_fields(
        fields, field_digests(event.stream_id, event.version, event.action, source.state)
    )
    return f"the stored event differs from what was logged: {', '.join(changed) or 'bytes'} changed"


def consistency_proof(
    log: IntegrityLog, workspace_id: str, old_size: int, new_size: int
) -> dict[str, Any]:
    """The proof that the log at ``new_size`` extends the log at ``old_size``, with both
    roots, and the signed checkpoints of those sizes where there are any."""
    head = log.heads(workspace_id).get(workspace_id)
    size = head.size if head else 0
    if not 1 <= old_size <= new_size:
        raise InvalidQueryError("from", "give 1 <= from <= to (every log extends the empty one)")
    if new_size > size:
        # The tree does not exist (yet): a missing resource, not a malformed request.
        raise NotFoundError(f"to: the log of this workspace holds {size} events")
    fetch = _fetch(log, workspace_id)
    try:
        proof = range_hashes(consistency_ranges(old_size, new_size), fetch)
        old_root, new_root = root_at(old_size, fetch), root_at(new_size, fetch)
        verify_consistency(old_size, new_size, proof, old_root, new_root)
    except (LookupError, ProofError) as error:
        raise ProofUnavailableError(
            f"the stored log cannot prove this ({error}); run `auditcore verify`"
        ) from error
    checkpoints = {
        name: log.checkpoint_at(workspace_id, tree_size)
        for name, tree_size in (("from", old_size), ("to", new_size))
    }
    return {
        "from": old_size,
        "to": new_size,
        "from_root_hash": b64(old_root),
        "to_root_hash": b64(new_root),
        "consistency_proof": [b64(item) for item in proof],
        "from_checkpoint": checkpoint_json(c) if (c := checkpoints["from"]) else None,
        "to_checkpoint": checkpoint_json(c) if (c := checkpoints["to"]) else None,
    }
