"""The quick JSON Schema check (jsonschema-rs) never changes a verdict: for every schema and
any metadata, hostile values included, the problems found are exactly those jsonschema alone
finds. A schema with patterns never takes the quick path (patterns run on RE2 only)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from auditcore.events.json_schemas import JsonSchemaCheck, compile_schema

SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {"method": {"type": "string", "maxLength": 5}, "mfa": {"type": "boolean"}},
        "required": ["method", "mfa"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "$defs": {"n": {"type": "integer", "minimum": -3, "maximum": 2**63 - 1}},
        "properties": {
            "count": {"$ref": "#/$defs/n"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            "ratio": {"type": "number", "exclusiveMaximum": 1},
        },
        "dependentRequired": {"ratio": ["count"]},
    },
    {
        "anyOf": [
            {"properties": {"kind": {"const": "a"}, "a": {"type": "null"}}},
            {"properties": {"kind": {"enum": ["b", 2]}, "b": {"type": ["string", "integer"]}}},
        ],
        "unevaluatedProperties": False,
    },
    {"type": "object", "additionalProperties": {"type": "object", "minProperties": 1}},
    {
        "if": {"required": ["x"]},
        "then": {"properties": {"y": {"type": "string", "minLength": 2}}, "required": ["y"]},
        "else": {"properties": {"z": {"not": {"type": "string"}}}},
        "properties": {"x": True},
    },
]

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)  # beyond 64 bits too
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8)
    | st.sampled_from(["a", "b", 2, 2.0, "é", "\u0000", "🙂🙂", "x" * 6])
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
_KEYS = st.sampled_from(
    ["method", "mfa", "count", "tags", "ratio", "kind", "a", "b", "x", "y", "z"]
)
_METADATA = st.dictionaries(_KEYS | st.text(max_size=3), _VALUES, max_size=5) | _VALUES


def _slow(check: JsonSchemaCheck) -> JsonSchemaCheck:
    slow = JsonSchemaCheck(check.schema)
    slow._quick = None  # jsonschema alone
    return slow


CHECKS = [(compile_schema(schema), schema) for schema in SCHEMAS]
SLOW = [_slow(check) for check, _ in CHECKS]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(SCHEMAS) - 1), _METADATA)
def test_the_quick_check_finds_exactly_what_jsonschema_finds(which: int, metadata: Any) -> None:
    check, _ = CHECKS[which]
    assert check._quick is not None
    assert check.problems(metadata) == SLOW[which].problems(metadata)


def test_a_schema_with_patterns_never_takes_the_quick_path() -> None:
    digits = compile_schema({"properties": {"pin": {"type": "string", "pattern": "^\\d{4}$"}}})
    assert digits._quick is None
    # Checked on RE2 as before: \d is ASCII, Arabic-Indic digits are refused.
    assert digits.problems({"pin": "١٢٣٤"})
    assert compile_schema({"patternProperties": {"^x": {}}})._quick is None
