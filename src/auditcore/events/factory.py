"""Builds new events: validates the envelope, the metadata schema and the metadata bounds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, JsonValue, ValidationError

from auditcore.errors import InvalidEventError, UnknownActionError
from auditcore.events.actions import ActionRegistry, located_problems
from auditcore.events.envelope import AuditEvent, Target
from auditcore.events.ids import new_event_id, stream_id_or_none
from auditcore.events.limits import occurred_at_problems
from auditcore.events.provenance import PROVENANCE_FIELDS, Provenance, with_ambient
from auditcore.events.reserved import is_reserved, not_reserved_problem, reserved_problem


def build_event(
    registry: ActionRegistry,
    *,
    action: str,
    workspace_id: str,
    stream_id: UUID | None,
    version: int,
    metadata: BaseModel | Mapping[str, Any] | None,
    subject: Sequence[Target] = (),
    provenance: Provenance,
    recorded: bool = False,
    control: bool = False,
    schema_version: int | None = None,
) -> AuditEvent:
    """Build an event, reporting every problem at once rather than the first one.

    ``subject`` are the targets the domain itself knows (e.g. the incident);
    the caller's own ``targets`` are appended after them. ``stream_id=None`` starts a stream
    (a standalone event's own, or an aggregate's), whose id ``stream_id_for`` derives from
    the workspace and the event id. ``recorded=True`` stamps
    ``recorded_at`` now (the event goes straight to the store); otherwise the store stamps it.
    ``control=True``: one of auditcore's own ``auditcore.*`` events, and only those (every
    other caller is refused them: ``auditcore.events.reserved``). ``schema_version``: validate
    against that version of the action's schema (None: the newest).
    """
    if is_reserved(action) != control:
        problem = reserved_problem(action) if control is False else not_reserved_problem(action)
        raise InvalidEventError(str(action), [problem])
    provenance = with_ambient(provenance)
    problems = unknown_fields(provenance)
    version_found: int = 1
    clean_metadata: dict[str, JsonValue] = {}
    try:
        version_found, clean_metadata = registry.validate_metadata(
            action,
            metadata,
            workspace_id if isinstance(workspace_id, str) else None,
            schema_version,
        )
    except UnknownActionError:
        raise
    except InvalidEventError as error:
        if not isinstance(action, str):
            raise  # nothing else can be said of an event without an action
        problems.extend(error.problems)

    given_id = provenance.get("event_id")
    event_id = new_event_id() if given_id is None else given_id
    now = datetime.now(UTC)
    fields: dict[str, Any] = {
        "event_id": event_id,
        "workspace_id": workspace_id,
        "stream_id": stream_id
        if stream_id is not None
        else stream_id_or_none(workspace_id, event_id),
        "version": version,
        "action": action,
        "schema_version": version_found,
        "targets": with_subject(subject, provenance.get("targets", ())),
        "occurred_at": provenance.get("occurred_at", now),
        "recorded_at": now if recorded else None,
        "metadata": clean_metadata,
    }
    for optional in ("actor", "source", "context"):
        if optional in provenance:
            fields[optional] = provenance[optional]
    try:
        event = AuditEvent.model_validate(fields)
    except ValidationError as error:
        located = located_problems("", error)
        if stream_id is None:  # a new stream's id comes from the workspace and event id: no
            # problem of its own (theirs are reported)
            located = [(where, what) for where, what in located if where != ".stream_id"]
        problems[:0] = located
        event = None
    if event is not None:
        if len({(t.type, t.id) for t in event.targets}) != len(event.targets):
            problems.append(("targets", "the same target (type, id) is listed more than once"))
        problems += party_metadata_problems(registry, event)
        problems += registry.event_limits.check(event.targets, len(event.stored_json()))
        problems += occurred_at_problems(event.occurred_at, now, registry.max_future)
    if problems or event is None:
        raise InvalidEventError(action, [(loc.lstrip("."), msg) for loc, msg in problems])
    return event


def party_metadata_problems(registry: ActionRegistry, event: AuditEvent) -> list[tuple[str, str]]:
    """The actor's and targets' own metadata (WorkOS's) are bounded like an event's."""
    problems = []
    if event.actor.metadata is not None:
        problems += registry.limits.check(event.actor.metadata, "actor.metadata")
    for index, target in enumerate(event.targets):
        if target.metadata is not None:
            problems += registry.limits.check(target.metadata, f"targets[{index}].metadata")
    return problems


def unknown_fields(provenance: Provenance) -> list[tuple[str, str]]:
    """A problem for each keyword that is not part of an event's provenance (a misspelt
    ``actor=`` must not be dropped in silence)."""
    return [
        (name, f"unknown field; expected one of {', '.join(sorted(PROVENANCE_FIELDS))}")
        for name in provenance
        if name not in PROVENANCE_FIELDS
    ]


def with_subject(subject: Sequence[Target], targets: Any) -> Any:
    """The domain's own targets, then the caller's; anything but a list or tuple of targets is
    left as it is, for validation to refuse it at ``targets``."""
    if isinstance(targets, list | tuple):
        return [*subject, *targets]
    return targets


def build_standalone_event(
    registry: ActionRegistry,
    action: str,
    workspace_id: str,
    metadata: BaseModel | Mapping[str, Any] | None,
    provenance: Provenance,
    *,
    control: bool = False,
    schema_version: int | None = None,
) -> AuditEvent:
    """A standalone event: its own one-event stream, recorded now (``control`` and
    ``schema_version``: see ``build_event``)."""
    return build_event(
        registry,
        action=action,
        workspace_id=workspace_id,
        stream_id=None,
        version=1,
        metadata=metadata,
        provenance=provenance,
        recorded=True,
        control=control,
        schema_version=schema_version,
    )
