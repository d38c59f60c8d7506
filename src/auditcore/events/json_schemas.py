"""Actions whose metadata schema is data: JSON Schema (draft 2020-12), checked with the
``jsonschema`` library.

A schema comes from whoever holds an ``admin`` key, so it is treated as hostile input:

- its size and nesting are bounded (``MAX_SCHEMA_BYTES``, ``MAX_SCHEMA_DEPTH``);
- it must be a valid draft 2020-12 schema (checked against the metaschema);
- ``$ref`` may only point inside the schema itself (``#…``): nothing is ever fetched;
- ``pattern`` and ``patternProperties`` run on RE2 (``google-re2``), whose matching time is
  linear in the input, so no pattern can backtrack catastrophically (ReDoS); a pattern RE2
  cannot compile (look-around, back-references) is refused when the schema is registered;
- a schema that recurses without end (``{"$ref": "#"}``) is refused when registered, and is
  reported as a problem, never a crash, should one slip through.

Undeclared metadata keys are refused unless the schema opts in: the schema is checked as
``{"allOf": [schema], "unevaluatedProperties": false}``, so a key that no ``properties``,
``patternProperties`` or ``additionalProperties`` of the schema accounts for is a problem
naming it (``"additionalProperties": true`` in the schema lets every key through).

Speed: a schema without patterns is also compiled by ``jsonschema-rs`` (the same draft, in
Rust, offline: it can fetch nothing), which says at a fraction of the cost whether metadata
is valid; only metadata it finds invalid (or cannot take) is checked again by ``jsonschema``
for the located messages. A schema with ``pattern`` or ``patternProperties`` always takes the
``jsonschema`` path: its patterns must run on RE2 (linear time; jsonschema-rs's default
engine backtracks, and its dialect is not RE2's). Undeclared keys are found the same way either way.

Failure semantics: ``compile_schema`` raises ``SchemaError`` (one line saying what is wrong)
and keeps nothing; ``JsonSchemaCheck.problems`` never raises for any JSON metadata.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import jsonschema_rs
import orjson
import re2  # type: ignore[import-untyped]
from jsonschema import (  # type: ignore[import-untyped]
    Draft202012Validator,
    ValidationError,
    validators,
)
from jsonschema.exceptions import SchemaError as _MetaschemaError  # type: ignore[import-untyped]
from referencing.exceptions import Unresolvable

MAX_SCHEMA_BYTES = 64 * 1024
"""Largest schema accepted, as compact JSON."""
MAX_SCHEMA_DEPTH = 32
"""Deepest nesting of objects and arrays in a schema."""
MAX_PATTERN_LENGTH = 1000
"""Longest ``pattern`` (or ``patternProperties`` key)."""


class SchemaError(ValueError):
    """A JSON Schema that cannot be registered; the message says why, in one line."""


_QUIET = re2.Options()
_QUIET.log_errors = False  # a refused pattern is reported by us, not logged to stderr by RE2


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> Any:
    return re2.compile(pattern, _QUIET)


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _regex(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _regex(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _required(
    validator: Any, required: list[str], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """Located at the missing key (``metadata.commit: Field required``), as pydantic says it."""
    if not validator.is_type(instance, "object"):
        return
    for key in required:
        if key not in instance:
            yield ValidationError("Field required", path=[key])


Validator = validators.extend(
    Draft202012Validator,
    {"pattern": _pattern, "patternProperties": _pattern_properties, "required": _required},
)
"""Draft 2020-12, with patterns on RE2 (linear time) and missing keys located at the key."""


class JsonSchemaCheck:
    """One compiled schema: validates metadata and lists every problem with its location."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        self.schema = schema
        self._validator = Validator(schema)
        self._declared = _plainly_declared(schema)
        self._quick = _quick_validator(schema)

    def _plainly_valid(self, metadata: Any) -> bool:
        """Whether the quick validator finds ``metadata`` valid (False: look closer)."""
        if self._quick is None:
            return False
        try:
            return bool(self._quick.is_valid(metadata))
        except Exception:  # a value Rust cannot take (an int beyond 64 bits…): look closer
            return False

    def problems(self, metadata: Any, prefix: str = "metadata") -> list[tuple[str, str]]:
        try:
            errors = (
                []
                if self._plainly_valid(metadata)
                else sorted(self._validator.iter_errors(metadata), key=lambda e: list(e.path))
            )
            undeclared = self._undeclared(metadata) if isinstance(metadata, dict) else []
        except RecursionError:
            return [(prefix, "the action's schema refers to itself without end")]
        except Unresolvable as error:
            return [(prefix, f"the action's schema has a $ref that cannot be resolved: {error}")]
        found = [
            (f"{prefix}.{key}", "undeclared key: the action's schema does not declare it")
            for key in undeclared
        ]
        for found_error in errors:
            location = prefix
            for part in found_error.path:
                location += f"[{part}]" if isinstance(part, int) else f".{part}"
            found.append((location, found_error.message))
        return found

    def _undeclared(self, metadata: dict[str, Any]) -> list[str]:
        if self._declared is None:
            return [k for k in metadata if not _declares(self._validator, self.schema, k, metadata)]
        names, patterns, open_ = self._declared
        if open_:
            return []
        return [
            key
            for key in metadata
            if key not in names and not any(pattern.search(key) for pattern in patterns)
        ]


def _quick_validator(schema: Mapping[str, Any]) -> Any:
    """``jsonschema-rs``'s validator for ``schema``, or None: a schema with patterns (they
    must run on RE2), or one it does not take."""
    text = orjson.dumps(schema).decode()
    if '"pattern"' in text or '"patternProperties"' in text:
        return None  # also when only a property is so named: the slower path is never wrong
    try:
        return jsonschema_rs.Draft202012Validator(
            dict(schema), validate_formats=False, offline=True
        )
    except Exception:
        return None


def _plainly_declared(schema: Mapping[str, Any]) -> tuple[frozenset[str], list[Any], bool] | None:
    """For a schema that composes nothing at its top (the common case), what it declares there:
    its ``properties``, its ``patternProperties`` and whether any other key is let through;
    None for one that composes (``$ref``, ``allOf``, ``if`` …), checked key by key instead."""
    composing = ("$ref", "$dynamicRef", "allOf", "anyOf", "oneOf", "if", "dependentSchemas")
    if any(keyword in schema for keyword in composing):
        return None
    open_ = any(
        keyword in schema and schema[keyword] is not False
        for keyword in ("additionalProperties", "unevaluatedProperties")
    )
    patterns = [_regex(pattern) for pattern in schema.get("patternProperties", {})]
    return frozenset(schema.get("properties", {})), patterns, open_


def _declares(validator: Any, schema: Any, key: str, instance: dict[str, Any]) -> bool:
    """Whether the schema accounts for ``key`` at the top level: in ``properties``, a
    ``patternProperties`` pattern, an ``additionalProperties`` other than false, or a
    subschema that applies (``$ref``, ``allOf``, a matching ``anyOf``/``oneOf``, ``if`` /
    ``then`` / ``else``, ``dependentSchemas``). Undeclared keys are refused by default."""
    if not isinstance(schema, dict):
        return schema is True
    if key in schema.get("properties", {}):
        return True
    if any(_regex(pattern).search(key) for pattern in schema.get("patternProperties", {})):
        return True
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if keyword in schema and schema[keyword] is not False:
            return True
    for keyword in ("$ref", "$dynamicRef"):
        if isinstance(schema.get(keyword), str):
            resolved = validator._resolver.lookup(schema[keyword])
            inner = validator.evolve(schema=resolved.contents, _resolver=resolved.resolver)
            if _declares(inner, resolved.contents, key, instance):
                return True
    subschemas = list(schema.get("allOf", []))
    subschemas += [
        s for k in ("anyOf", "oneOf") for s in schema.get(k, []) if _valid(validator, s, instance)
    ]
    subschemas += [s for name, s in schema.get("dependentSchemas", {}).items() if name in instance]
    if "if" in schema:
        subschemas.append(schema["if"])
        subschemas.append(
            schema.get("then" if _valid(validator, schema["if"], instance) else "else", False)
        )
    return any(_declares(validator, subschema, key, instance) for subschema in subschemas)


def _valid(validator: Any, schema: Any, instance: Any) -> bool:
    return bool(validator.evolve(schema=schema).is_valid(instance))


def compile_schema(schema: Any) -> JsonSchemaCheck:
    """Check a schema given by a client and compile it; ``SchemaError`` says what is wrong."""
    if not isinstance(schema, dict):
        raise SchemaError(f"a JSON Schema must be a JSON object, not {type(schema).__name__}")
    try:
        size = len(orjson.dumps(schema))
    except (TypeError, orjson.JSONEncodeError) as error:
        raise SchemaError(f"the schema is not JSON: {error}") from None
    if size > MAX_SCHEMA_BYTES:
        raise SchemaError(f"the schema is {size} bytes as JSON; the limit is {MAX_SCHEMA_BYTES}")
    declared = schema.get("$schema")
    if declared is not None and declared != "https://json-schema.org/draft/2020-12/schema":
        raise SchemaError(
            f"$schema {declared!r} is not supported: use draft 2020-12 "
            "(https://json-schema.org/draft/2020-12/schema) or leave $schema out"
        )
    _walk(schema, 0)
    try:
        Validator.check_schema(schema)
    except _MetaschemaError as error:
        where = "/".join(str(part) for part in error.path) or "(top)"
        raise SchemaError(f"not a valid draft 2020-12 schema at {where}: {error.message}") from None
    check = JsonSchemaCheck(schema)
    samples: tuple[Any, ...] = ({}, {"x": None}, [])
    for sample in samples:
        problems = check.problems(sample)
        for _, message in problems:
            if message.startswith("the action's schema"):
                raise SchemaError(message.removeprefix("the action's schema ").capitalize())
    return check


def _finite(value: Any) -> None:
    """Python's JSON reader takes NaN and Infinity; stored, they would become null, and the
    schema would no longer pass the metaschema when read back."""
    if isinstance(value, float) and not math.isfinite(value):
        raise SchemaError(f"the schema is not JSON: {value} is not a JSON number")


def _walk(node: Any, depth: int) -> None:
    """Bound the nesting, keep ``$ref`` local and every pattern RE2-compatible."""
    if depth > MAX_SCHEMA_DEPTH:
        raise SchemaError(f"the schema nests deeper than {MAX_SCHEMA_DEPTH} levels")
    if isinstance(node, list):
        for item in node:
            _walk(item, depth + 1)
        return
    if not isinstance(node, dict):
        _finite(node)
        return
    for keyword in ("$ref", "$dynamicRef"):
        reference = node.get(keyword)
        if isinstance(reference, str) and not reference.startswith("#"):
            raise SchemaError(
                f"{keyword} {reference[:80]!r} points outside the schema; only local "
                "references (#/$defs/…) are allowed"
            )
    patterns = []
    if isinstance(node.get("pattern"), str):
        patterns.append(node["pattern"])
    if isinstance(node.get("patternProperties"), dict):
        patterns.extend(node["patternProperties"])
    for pattern in patterns:
        if len(pattern) > MAX_PATTERN_LENGTH:
            raise SchemaError(
                f"a pattern is {len(pattern)} characters long; the limit is {MAX_PATTERN_LENGTH}"
            )
        try:
            _regex(pattern)
        except re2.error as error:
            reason = (
                error.args[0].decode() if error.args and isinstance(error.args[0], bytes) else error
            )
            raise SchemaError(
                f"pattern {pattern[:80]!r} is not supported ({reason}); patterns run on RE2: "
                "no look-around or back-references"
            ) from None
    for value in node.values():
        _walk(value, depth + 1)
