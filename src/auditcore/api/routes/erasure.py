"""``POST /v1/erasures``: erase a subject's personal data in the key's own workspace (the
``admin`` scope). What it does and guarantees: ``auditcore.lifecycle.erasure``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from auditcore.api.deps import Administering, ServicesDep, request_context
from auditcore.api.errors import ApiError
from auditcore.events.envelope import Actor, ActorType, RequestContext

router = APIRouter(prefix="/v1", tags=["erasure"])


class ErasureIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject_id: str = Field(
        min_length=1, max_length=256, description="The subject: an actor's (or a person's) id."
    )


class ErasureOut(BaseModel):
    workspace_id: str
    subject_id: str
    requested_at: datetime
    keys_destroyed: int
    event_id: UUID
    """The ``auditcore.subject.erased`` event that records it."""
    finished: bool
    """False: the keys are destroyed and the erasure recorded, but a read model could not be
    re-projected yet (``detail`` says why); sending the same request again finishes it."""
    detail: str | None = None


@router.post(
    "/erasures",
    response_model=ErasureOut,
    summary="Erase a subject's personal data (crypto-shredding)",
)
def erase_subject(
    body: ErasureIn,
    found: ServicesDep,
    principal: Administering,
    context: Annotated[RequestContext, Depends(request_context)],
) -> ErasureOut:
    """Destroys the subject's keys in this workspace: from then on its personal fields (the
    name, IP address and user agent of its requests, personal metadata) read as `[erased]`
    everywhere, while ids, actions and times stay. Recorded as `auditcore.subject.erased`.
    Safe to repeat."""
    if found.audit.subject_keys is None:
        raise ApiError(
            409, "encryption_off", "this server does not encrypt personal data: nothing to erase"
        )
    actor = Actor(id=principal.key_id, type=ActorType.API_KEY, name=principal.key_name)
    done = found.audit.erase(
        principal.workspace_id, body.subject_id, actor=actor, source="api", context=context
    )
    return ErasureOut(
        workspace_id=done.workspace_id,
        subject_id=done.subject_id,
        requested_at=done.requested_at,
        keys_destroyed=done.keys_destroyed,
        event_id=done.event_id,
        finished=done.finished,
        detail=done.unfinished_because,
    )
