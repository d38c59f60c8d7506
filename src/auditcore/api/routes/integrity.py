"""``/v1/events/{id}/proof`` and ``/v1/checkpoints``: the workspace's Merkle log, as proofs
anyone holding the log's public key can check."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from auditcore.api.deps import Reading, ServicesDep
from auditcore.api.errors import ApiError
from auditcore.errors import NotFoundError
from auditcore.integrity.proofs import ProofUnavailableError, checkpoint_json

router = APIRouter(prefix="/v1", tags=["integrity"])

MAX_SIZE = 2**63 - 1
"""Tree sizes are store positions: PostgreSQL bigints."""


class CheckpointOut(BaseModel):
    workspace_id: str
    origin: str
    tree_size: int
    root_hash: str
    signed_at: str
    key: str
    checkpoint: str
    """The C2SP signed note (c2sp.org/tlog-checkpoint) itself: what to check and keep."""


class ProofOut(BaseModel):
    status: str
    """``proven`` · ``pending`` (not in a signed checkpoint yet) · ``failed`` (the stored event
    or the log was changed)"""
    detail: str
    event_id: str
    leaf_index: int | None
    tree_size: int | None = None
    leaf_hash: str | None = None
    inclusion_proof: list[str] | None = None
    checkpoint: CheckpointOut | None = None


class ConsistencyOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: int = Field(alias="from")
    to: int
    from_root_hash: str
    to_root_hash: str
    consistency_proof: list[str]
    from_checkpoint: CheckpointOut | None
    to_checkpoint: CheckpointOut | None


class PublicKeyOut(BaseModel):
    log_key: str
    """The installation's verifier key (C2SP vkey)."""
    workspace_key: str
    """The same key as named for this workspace's log, which signs its checkpoints."""
    origin: str


@router.get(
    "/events/{event_id}/proof",
    response_model=ProofOut,
    response_model_exclude_none=True,
    summary="Inclusion proof of one event",
)
def event_proof(event_id: UUID, found: ServicesDep, principal: Reading) -> dict[str, Any]:
    """Proves the event, as stored now, is at its position in the workspace's Merkle log
    covered by the latest signed checkpoint (RFC 9162 inclusion proof, checked here first)."""
    integrity = found.audit.integrity
    proof = integrity.event_proof(principal.workspace_id, event_id)
    if proof.leaf_index is None:
        # Not logged yet: only an event of this workspace is "pending"; others are unknown.
        found.audit.event(event_id, workspace_id=principal.workspace_id)
    return proof.as_json()


@router.get(
    "/checkpoints/latest", response_model=CheckpointOut, summary="The latest signed checkpoint"
)
def latest_checkpoint(found: ServicesDep, principal: Reading) -> dict[str, Any]:
    checkpoint = found.audit.integrity.latest_checkpoint(principal.workspace_id)
    if checkpoint is None:
        raise NotFoundError("this workspace's log has no signed checkpoint yet")
    return checkpoint_json(checkpoint)


@router.get(
    "/checkpoints/consistency",
    response_model=ConsistencyOut,
    summary="Consistency proof between two tree sizes",
)
def consistency(
    found: ServicesDep,
    principal: Reading,
    from_: Annotated[
        int, Query(alias="from", ge=1, le=MAX_SIZE, description="The older tree size.")
    ],
    to: Annotated[int, Query(ge=1, le=MAX_SIZE, description="The newer tree size.")],
) -> dict[str, Any]:
    """Proves the log at size ``to`` extends the log at size ``from`` (RFC 9162), with both
    root hashes and the signed checkpoints of those sizes where there are any."""
    try:
        return found.audit.integrity.consistency(principal.workspace_id, from_, to)
    except ProofUnavailableError as error:
        raise ApiError(409, "proof_unavailable", str(error)) from None


@router.get("/checkpoints/public-key", response_model=PublicKeyOut, summary="The log's public key")
def public_key(found: ServicesDep, principal: Reading) -> dict[str, str]:
    signer = found.audit.integrity.signer
    if signer is None:
        raise NotFoundError("this server signs no checkpoints (no signing key is configured)")
    workspace_key = signer.verifier().for_log(principal.workspace_id)
    return {
        "log_key": signer.verifier().encode(),
        "workspace_key": workspace_key.encode(),
        "origin": workspace_key.name,
    }
