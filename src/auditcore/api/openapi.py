"""The OpenAPI document, stated as exactly as JSON Schema can: every error a route can answer
(with its JSON body), every query parameter's form (the documented time pattern, limits,
enums, each read model's filters), and the event body per registered action (its metadata
schema and bounds). What remains beyond JSON Schema is stated in words where it applies: a
range's start must come before its end, a cursor must be one the server issued for the same
query, ``occurred_at`` must lie between 1900 and a few minutes from now.

schemathesis checks the server against this document (tests/test_openapi_conformance.py).

Actions registered as data (JSON Schema, ``auditcore.store.action_schemas``) for every
workspace are in it beside the Python ones, each with its newest schema (its local ``$ref``s
pointed into the document); an action one workspace registered for itself is not: this
document is public, and that workspace's schemas are its own business
(``GET /v1/actions`` lists them to its keys).

Failure semantics: built at the first request for it, and again when the actions registered
as data for every workspace change (a new name or version, seen as soon as the process's
catalog sees it: at once for a registration through this process, within the catalog's
refresh interval for one made elsewhere); otherwise from the registries as they were then.
"""

from __future__ import annotations

import copy
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter, ValidationError

from auditcore.api.errors import ERROR_BODY
from auditcore.api.live_ids import HEADER_PATTERN
from auditcore.api.schemas import EventIn, WorkosCreateEvent
from auditcore.events.actions import ActionRegistry, ActionSpec
from auditcore.events.limits import MetadataLimits
from auditcore.readmodel.cursor import CURSOR_PATTERN
from auditcore.readmodel.model import Filter, StateTable
from auditcore.readmodel.queries import MAX_LIMIT
from auditcore.readmodel.registry import ReadModelRegistry
from auditcore.timespec import MOMENT_PATTERN

ERRORS: dict[str, str] = {
    "400": "Bad request: a query parameter, path parameter or header is not valid "
    "(`invalid_query`, `invalid_request`: the body names each one), the answer would hold "
    "more rows than the server returns at once (`query_too_broad`), or the body is not JSON "
    "(`invalid_json`).",
    "401": "`unauthenticated`: no API key, or one that is not valid or has been revoked.",
    "403": "The key may not do this: it lacks the scope (`missing_scope`) or the read model's "
    "entitlement (`not_entitled`), or the body names another workspace (`wrong_workspace`).",
    "404": "`not_found`: no such event, stream, read model or route in this workspace.",
    "409": "`conflict` (another writer changed the stream first), `event_id_reused` (an "
    "event id or Idempotency-Key sent before with other content), `proof_unavailable`.",
    "413": "`body_too_large` (over the server's body limit) or `batch_too_large`.",
    "422": "`invalid_event`: an event is not valid (unknown action, metadata not matching its "
    "schema or bounds, an integer beyond 64 bits anywhere in it, `occurred_at` out of "
    "range); every problem, with where it is.",
}
_TIME = {"type": "string", "pattern": MOMENT_PATTERN}
_LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
PARAMETERS: dict[str, dict[str, Any]] = {
    "since": _TIME,
    "until": _TIME,
    "recorded_since": _TIME,
    "recorded_until": _TIME,
    "limit": _LIMIT,
    "cursor": {"type": "string", "pattern": CURSOR_PATTERN},
    "text": {"type": "string", "maxLength": 200},
    "group_by": {"type": "string", "enum": ["action", "actor", "source"]},
    "interval": {"type": "string", "enum": ["minute", "hour", "day", "auto"]},
    "format": {"type": "string", "enum": ["csv", "jsonl"]},
    "status": {"type": "string", "enum": ["parked", "retried", "skipped", "all"]},
    "idempotency-key": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,255}$"},
    "last-event-id": {"type": "string", "pattern": HEADER_PATTERN},
}
"""Each parameter's schema, by name (headers in lower case): what the server reads (FastAPI
sees strings)."""


def data_actions(registry: ActionRegistry) -> list[ActionSpec]:
    """The actions registered as data for every workspace (newest version each) that Python
    does not define, by name."""
    if registry.catalog is None:
        return []
    python = {spec.name for spec in registry}
    found = (registry.catalog.find(None, name, None) for name in registry.catalog.names(None))
    return [spec for spec in found if spec is not None and spec.name not in python]


def data_actions_key(registry: ActionRegistry) -> tuple[tuple[str, int], ...]:
    """What the document's data actions depend on: when it changes, the document is rebuilt."""
    return tuple((spec.name, spec.version) for spec in data_actions(registry))


def build_openapi(
    app: FastAPI, registry: ActionRegistry, models: ReadModelRegistry, max_batch: int
) -> dict[str, Any]:
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Error"] = ERROR_BODY
    components["EventIn"] = _event_in(components, registry)
    workos = TypeAdapter(WorkosCreateEvent).json_schema(ref_template="#/components/schemas/{model}")
    components.update(workos.pop("$defs", {}))
    components["WorkosCreateEvent"] = workos
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            _parameters(operation, models)
            if path.startswith(("/v1/", "/audit_logs/")):
                _errors(operation)
            for status, response in operation.get("responses", {}).items():
                if status >= "400" and "content" not in response:
                    response["content"] = _ERROR_CONTENT
    _state_models(schema, models)
    _event_body(schema, max_batch)
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    return schema


def _parameters(operation: dict[str, Any], models: ReadModelRegistry) -> None:
    parameters = operation.setdefault("parameters", [])
    for parameter in parameters:
        declared = PARAMETERS.get(parameter["name"])
        if declared is not None:
            parameter["schema"] = dict(declared)
        else:
            parameter["schema"] = _not_null(parameter["schema"])
    model_name = operation.pop("x-filters-from", None)
    if model_name is not None:
        parameters.extend(_filter_parameter(f) for f in models.get(model_name).filters)


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A parameter is absent or a string: ``anyOf [X, null]`` is X."""
    options = schema.get("anyOf")
    if options and len(options) == 2 and {"type": "null"} in options:
        (kept,) = [option for option in options if option != {"type": "null"}]
        rest = {key: value for key, value in schema.items() if key != "anyOf"}
        return {**kept, **rest}
    return schema


def _filter_parameter(declared: Filter) -> dict[str, Any]:
    value: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 256}
    value |= dict(declared.value_schema)
    return {
        "name": declared.name,
        "in": "query",
        "required": False,
        "description": (declared.help or declared.name) + " (repeat for any of several values)",
        "schema": {"type": "array", "items": value},
        "style": "form",
        "explode": True,
    }


_ERROR_CONTENT = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}


def _errors(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status, description in ERRORS.items():
        responses[status] = {"description": description, "content": _ERROR_CONTENT}


def _state_models(schema: dict[str, Any], models: ReadModelRegistry) -> None:
    """``/v1/models/{name}/rows`` answers for current-state read models only."""
    names = sorted(model.name for model in models if isinstance(model, StateTable))
    for parameter in schema["paths"]["/v1/models/{name}/rows"]["get"]["parameters"]:
        if parameter["name"] == "name":
            parameter["schema"] = {**parameter["schema"], "enum": names}


def _event_body(schema: dict[str, Any], max_batch: int) -> None:
    body = schema["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]
    body["schema"]["oneOf"][1] |= {"minItems": 1, "maxItems": max_batch}


def _event_in(components: dict[str, Any], registry: ActionRegistry) -> dict[str, Any]:
    """One event: the common envelope with, per registered action, its metadata schema."""
    envelope = TypeAdapter(EventIn).json_schema(ref_template="#/components/schemas/{model}")
    components.update(envelope.pop("$defs", {}))
    _context_ip(components)
    # How many targets an event may list; their bytes and the event's size are stated in words.
    envelope["properties"]["targets"]["maxItems"] = registry.event_limits.max_targets
    variants = []
    for spec in sorted([*registry, *data_actions(registry)], key=lambda spec: spec.name):
        if spec.name.startswith("auditcore."):
            continue  # auditcore's own actions: recorded by auditcore only
        if spec.json_schema is not None:
            metadata = _data_metadata(components, spec, registry.limits)
        else:
            prefix = f"{spec.name}."
            metadata = spec.model.model_json_schema(
                ref_template=f"#/components/schemas/{prefix}{{model}}"
            )
            for name, definition in metadata.pop("$defs", {}).items():
                components[prefix + name] = _bounded(definition, registry.limits)
            metadata = _bounded(metadata, registry.limits)
        variant = copy.deepcopy(envelope)
        variant["title"] = spec.name
        variant["properties"]["action"] = {"const": spec.name, "type": "string"}
        variant["properties"]["metadata"] = metadata
        required = {*variant.get("required", []), "action"}
        if not _accepts_empty(spec):
            required.add("metadata")  # its default, {}, is not valid for this action
        variant["required"] = sorted(required)
        variant.pop("examples", None)
        variants.append(variant)
    return {
        "description": envelope.get("description", ""),
        "oneOf": variants,
        "examples": envelope.get("examples", []),
    }


def _data_metadata(
    components: dict[str, Any], spec: ActionSpec, limits: MetadataLimits
) -> dict[str, Any]:
    """An action's JSON Schema as a component of its own (``metadata.NAME``), its local
    ``$ref``s pointed there, checked as auditcore checks it: undeclared keys refused unless
    the schema lets them through (``unevaluatedProperties``)."""
    key = f"metadata.{spec.name}"
    home = f"#/components/schemas/{key}"
    components[key] = _bounded(_rehomed(copy.deepcopy(dict(spec.json_schema or {})), home), limits)
    return {"allOf": [{"$ref": home}], "unevaluatedProperties": False}


def _rehomed(node: Any, home: str) -> Any:
    """``node`` with each local reference (``#``, ``#/$defs/x``) made relative to ``home``."""
    if isinstance(node, list):
        return [_rehomed(item, home) for item in node]
    if not isinstance(node, dict):
        return node
    moved = {key: _rehomed(value, home) for key, value in node.items()}
    for keyword in ("$ref", "$dynamicRef"):
        reference = moved.get(keyword)
        if isinstance(reference, str) and reference.startswith("#"):
            moved[keyword] = home + reference[1:]
    moved.pop("$schema", None)  # the document's dialect is already draft 2020-12
    return moved


def _accepts_empty(spec: ActionSpec) -> bool:
    if spec.json_schema is not None:
        return not spec.problems({})
    try:
        spec.model.model_validate({})
    except ValidationError:
        return False
    return True


def _context_ip(components: dict[str, Any]) -> None:
    ip = components["ClientContext"]["properties"]["ip"]
    ip["anyOf"] = [
        {"type": "string", "format": "ipv4"},
        {"type": "string", "format": "ipv6"},
        {"type": "null"},
    ]


def _bounded(schema: dict[str, Any], limits: MetadataLimits) -> dict[str, Any]:
    """A metadata schema with the registry's bounds where JSON Schema can state them: string
    values and key lengths; counts and total size are stated in words."""
    if schema.get("type") == "string":
        longest = limits.max_value_length
        if schema.get("format") == "uri":
            longest -= 1  # a URL is stored normalised, which may add a "/"
        schema["maxLength"] = min(schema.get("maxLength", longest), longest)
    if schema.get("type") == "object":
        schema["propertyNames"] = {"maxLength": limits.max_key_length}
        schema["maxProperties"] = limits.max_keys
    for key in ("properties", "$defs"):
        for child in schema.get(key, {}).values():
            _bounded(child, limits)
    for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
        for child in schema.get(key, []):
            _bounded(child, limits)
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            _bounded(schema[key], limits)
    return schema
