"""Who, from where and when: the part of an event that comes from the caller, not the domain.

Commands take it as keyword arguments; a web request or a job can also set it once for
everything recorded inside a ``with acting_as(...)`` block.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypedDict
from uuid import UUID

from auditcore.events.envelope import Actor, RequestContext, Target


class Provenance(TypedDict, total=False):
    actor: Actor | Mapping[str, Any]
    source: str
    context: RequestContext | Mapping[str, Any]
    event_id: UUID | str
    occurred_at: datetime
    targets: Sequence[Target | Mapping[str, Any]]


PROVENANCE_FIELDS = frozenset(Provenance.__annotations__)

_ambient: ContextVar[Provenance | None] = ContextVar("auditcore_provenance", default=None)


@contextmanager
def acting_as(
    actor: Actor | Mapping[str, Any] | None = None,
    *,
    source: str | None = None,
    context: RequestContext | Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """Attribute every event recorded in this block (in this thread or task) to ``actor``."""
    merged: Provenance = dict(_ambient.get() or {})  # type: ignore[assignment]
    if actor is not None:
        merged["actor"] = actor
    if source is not None:
        merged["source"] = source
    if context is not None:
        merged["context"] = context
    token = _ambient.set(merged)
    try:
        yield
    finally:
        _ambient.reset(token)


def with_ambient(explicit: Provenance) -> Provenance:
    """Explicit arguments win over the ambient ``acting_as`` block."""
    ambient = _ambient.get()
    if not ambient:
        return explicit
    return {**ambient, **explicit}
