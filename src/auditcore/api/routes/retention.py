"""``/v1/retention``: this workspace's retention policy and the archives made under it, for a
key with the ``admin`` scope. (The installation's default and the pruning runs themselves are
the operator's: ``auditcore retention``.)"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from auditcore.api.deps import Administering, ServicesDep
from auditcore.events.envelope import Actor, ActorType
from auditcore.lifecycle.retention import MAX_DAYS, Retention
from auditcore.tenancy.directory import Principal

router = APIRouter(prefix="/v1", tags=["retention"])


class ArchiveOut(BaseModel):
    from_size: int
    """The first log position archived."""
    to_size: int
    """One past the last log position archived."""
    state: str
    """``archived`` (events being deleted) · ``pruned`` (read models' rows pending) · ``done``"""
    sha256: str
    created_at: datetime


class RetentionOut(BaseModel):
    workspace_id: str
    days: int | None
    """Events are kept this many days after they were recorded; null: forever."""
    inherited: bool
    """The installation's default applies (this workspace has no policy of its own)."""
    archives: list[ArchiveOut]


class RetentionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    days: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    """Keep events this many days; null (with ``inherit`` false): keep them forever."""
    inherit: bool = False
    """Drop this workspace's own policy: the installation's default applies."""


def _answer(retention: Retention, workspace_id: str) -> RetentionOut:
    policy = retention.policy(workspace_id)
    return RetentionOut(
        workspace_id=workspace_id,
        days=policy.days,
        inherited=policy.inherited,
        archives=[
            ArchiveOut(
                from_size=row.from_size,
                to_size=row.to_size,
                state=row.state,
                sha256=row.sha256,
                created_at=row.created_at,
            )
            for row in retention.archives(workspace_id)
        ],
    )


@router.get("/retention", response_model=RetentionOut, summary="This workspace's retention")
def show_retention(found: ServicesDep, principal: Administering) -> RetentionOut:
    retention = Retention(found.audit)
    try:
        return _answer(retention, principal.workspace_id)
    finally:
        retention.close()


@router.put("/retention", response_model=RetentionOut, summary="Set this workspace's retention")
def set_retention(body: RetentionIn, found: ServicesDep, principal: Administering) -> RetentionOut:
    """Recorded as an ``auditcore.retention.policy_set`` event in the workspace."""
    retention = Retention(found.audit)
    actor = _actor(principal)
    try:
        if body.inherit:
            retention.inherit_default(principal.workspace_id, actor=actor, source="api")
        else:
            retention.set_policy(principal.workspace_id, body.days, actor=actor, source="api")
        return _answer(retention, principal.workspace_id)
    finally:
        retention.close()


def _actor(principal: Principal) -> Actor:
    return Actor(id=principal.key_id, type=ActorType.API_KEY, name=principal.key_name)
