"""Reading a request body as JSON without changing any number it holds.

orjson (fast, strict: no NaN or Infinity) reads an integer beyond 64 bits as a float, so
``123456789012345678901234567890`` would be recorded as ``1.2345678901234568e+29``: another
value than the client sent, accepted in silence, where ``record()`` in Python refuses it.
A body holding a float that large (the only form such an integer can take) is read again by
the standard library, which keeps integers exact, so the metadata bounds refuse them (422,
"send it as a string") like every other way in.

Failure semantics: a body that is not JSON raises ``ApiError`` 400 ``invalid_json``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from auditcore.api.errors import ApiError

_INT64 = float(2**63)


def load_json_body(body: bytes) -> Any:
    """The body's JSON value, every integer exact."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {error}") from None
    if _holds_huge_float(payload):
        try:
            payload = json.loads(body, parse_constant=_not_json)  # valid JSON: orjson read it
        except RecursionError:
            raise ApiError(400, "invalid_json", "the body is not valid JSON: too deep") from None
    return payload


def _holds_huge_float(payload: Any) -> bool:
    """Iterative: orjson reads nesting deeper than Python's recursion limit."""
    pending = [payload]
    while pending:
        value = pending.pop()
        if isinstance(value, float) and abs(value) >= _INT64:
            return True
        if isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def _not_json(constant: str) -> Any:
    raise ApiError(400, "invalid_json", f"the body is not valid JSON: {constant}")
