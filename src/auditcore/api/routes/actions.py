"""``/v1/actions``: the actions a key's workspace may record; register one's metadata schema as
JSON Schema (a key with the ``admin`` scope), for that workspace only.

A registration through the API never reaches another workspace: it is stored for the key's
workspace, which it shadows for that workspace alone. It is recorded as an
``auditcore.action_schema.registered`` event there. A schema that cannot be registered (invalid,
too large, a pattern RE2 cannot run, a ``$ref`` outside it, a Python action's name, a version
that is not the next) answers 422 saying why; nothing is stored.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response
from pydantic import BaseModel, Field

from auditcore.api.deps import Administering, ServicesDep, Viewing
from auditcore.api.errors import ApiError
from auditcore.errors import one_line
from auditcore.events.envelope import ACTION_MAX_LENGTH, Actor, ActorType, Target

router = APIRouter(prefix="/v1", tags=["actions"])


class SchemaIn(BaseModel):
    """An action's metadata schema to register."""

    model_config = {"extra": "forbid"}

    schema_: dict[str, Any] = Field(
        alias="schema",
        description="JSON Schema (draft 2020-12) of the metadata; undeclared keys are refused "
        'unless it sets "additionalProperties".',
    )
    version: int | None = Field(
        default=None, ge=1, description="Default: the next version (the same schema: unchanged)."
    )
    description: str = Field(default="", max_length=500)


class ActionOut(BaseModel):
    name: str
    version: int
    defined: str = Field(description="`python` or `json_schema`.")
    workspace_id: str | None = Field(
        description="The workspace it is registered for; null: every workspace."
    )
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    display_template: str = Field(
        default="",
        description="How its events read to a person, e.g. `{actor.name} resolved "
        "{targets[0].name}`; a JSON Schema sets it as `x-display-template`.",
    )
    created: bool | None = Field(
        default=None, description="On registration: false if this schema was already registered."
    )


NamePath = Annotated[str, Path(max_length=ACTION_MAX_LENGTH, description="e.g. deploy.started")]


@router.post(
    "/actions/{name}/schemas",
    response_model=ActionOut,
    response_model_by_alias=True,
    status_code=201,
    summary="Register an action's metadata schema (admin)",
    responses={200: {"description": "The same schema was registered already: nothing changed."}},
)
def register_schema(
    name: NamePath,
    body: Annotated[SchemaIn, Body()],
    found: ServicesDep,
    principal: Administering,
    response: Response,
) -> ActionOut:
    """For this key's workspace only; every process of the installation validates the action's
    events with it from then on (a running server within seconds)."""
    try:
        entry = found.audit.register_action(
            name,
            body.schema_,
            workspace_id=principal.workspace_id,
            version=body.version,
            description=body.description,
            registered_by=principal.key_id,
        )
    except ValueError as error:
        raise ApiError(
            422, "invalid_schema", f"cannot register {name!r}: {one_line(error)}"
        ) from None
    if entry.created:
        found.audit.record_control_event(
            "auditcore.action_schema.registered",
            workspace_id=principal.workspace_id,
            metadata={"name": entry.name, "version": entry.version},
            actor=Actor(id=principal.key_id, type=ActorType.API_KEY, name=principal.key_name),
            source="api",
            targets=[Target(type="action", id=entry.name)],
        )
    else:
        response.status_code = 200
    return ActionOut(
        name=entry.name,
        version=entry.version,
        defined="json_schema",
        workspace_id=entry.workspace_id,
        schema=entry.schema,
        display_template=_annotated(entry.schema),
        created=entry.created,
    )


@router.get(
    "/actions",
    response_model=list[ActionOut],
    response_model_by_alias=True,
    summary="Actions this workspace may record",
)
def list_actions(found: ServicesDep, principal: Viewing) -> list[ActionOut]:
    """Built-in and Python-registered actions, then every JSON Schema version registered for
    every workspace or for this one."""
    python = [
        ActionOut(
            name=spec.name,
            version=spec.version,
            defined="python",
            workspace_id=None,
            schema=spec.model.model_json_schema(),
            display_template=spec.template,
        )
        for spec in found.audit.registry
        if not spec.name.startswith("auditcore.")
    ]
    registered = [
        ActionOut(
            name=entry.name,
            version=entry.version,
            defined="json_schema",
            workspace_id=entry.workspace_id,
            schema=entry.schema,
            display_template=_annotated(entry.schema),
        )
        for entry in found.audit.action_schemas.listing(principal.workspace_id)
    ]
    return python + registered


def _annotated(schema: dict[str, Any]) -> str:
    template = schema.get("x-display-template")
    return template if isinstance(template, str) else ""


@router.get(
    "/display-templates",
    response_model=dict[str, str],
    summary="How each action's events read to a person",
)
def display_templates(found: ServicesDep, principal: Viewing) -> dict[str, str]:
    """Every action's display template this workspace sees (auditcore's own included; a JSON
    Schema registration for this workspace shadows one for every workspace), by action name.
    Placeholders are paths into the event's JSON; a missing field renders as nothing."""
    registry = found.audit.registry
    templates = {spec.name: spec.template for spec in registry if spec.template}
    for name in {
        entry.name for entry in found.audit.action_schemas.listing(principal.workspace_id)
    }:
        template = registry.spec(name, principal.workspace_id).template
        if template:
            templates[name] = template
    return dict(sorted(templates.items()))
