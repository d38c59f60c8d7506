"""schemathesis hooks for tests/test_openapi_conformance.py (``SCHEMATHESIS_HOOKS``).

JSON Schema cannot state a rule between two values, nor one that depends on the server's state
or clock. The OpenAPI document states these in words; here each one keeps schema-valid requests
that break it out of the positive cases (they are refused, as documented, with a 400 or 422):

- a time range whose start is after its end (``since``/``until``, ``recorded_…``,
  ``from``/``to`` of a consistency proof);
- a ``cursor`` the server did not issue for the same query (it is signed);
- a proof export (``proof=true``) with filters or CSV;
- an event whose ``occurred_at`` lies before 1900 or ahead of the server's clock;
- an event listing one target (type, id) twice, or targets over their bytes (``maxItems``
  states their count; their size and the whole event's are stated in words);
- an integer beyond 64 bits anywhere in a body (refused with a 422 rather than stored
  inexactly; free-form metadata has no schema to bound its integers).

Nothing else is filtered: every other schema-valid request must be answered 2xx (or 401, 403,
404, 409, 429, as schemathesis allows).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import schemathesis

from auditcore.events.limits import EventLimits, fits_64_bits
from auditcore.timespec import parse_moment

_RANGES = (("since", "until"), ("recorded_since", "recorded_until"))


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return True
    query = case.query or {}
    return not (
        _reversed_range(query)
        or "cursor" in query
        or _reversed_sizes(case.operation.path, query)
        or _proof_with_filters(case.operation.path, query)
        or _out_of_range_event(case.body)
        or _unfit_targets(case.body)
        or _huge_integer(case.body)
    )


def _reversed_range(query: dict[str, Any]) -> bool:
    for start, end in _RANGES:
        if isinstance(query.get(start), str) and isinstance(query.get(end), str):
            try:
                if parse_moment(query[start]) > parse_moment(query[end]):
                    return True
            except ValueError:
                return False
    return False


def _reversed_sizes(path: str, query: dict[str, Any]) -> bool:
    if path != "/v1/checkpoints/consistency":
        return False
    try:
        return int(str(query["from"])) > int(str(query["to"]))
    except (KeyError, ValueError):
        return False


def _proof_with_filters(path: str, query: dict[str, Any]) -> bool:
    if path != "/v1/events/export" or query.get("proof") not in (True, "true"):
        return False
    allowed = {"proof", "from_size", "to_size", "format"}
    return bool(set(query) - allowed) or query.get("format", "jsonl") != "jsonl"


def _out_of_range_event(body: Any) -> bool:
    events = body if isinstance(body, list) else [body]
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("occurred_at"), str):
            continue
        try:
            moment = datetime.fromisoformat(event["occurred_at"])
        except ValueError:
            continue
        if moment.tzinfo is None:
            continue
        if not datetime(1900, 1, 1, tzinfo=UTC) <= moment <= datetime.now(UTC):
            return True
    return False


def _unfit_targets(body: Any) -> bool:
    limits = EventLimits()
    events = body if isinstance(body, list) else [body]
    for event in events:
        targets = event.get("targets") if isinstance(event, dict) else None
        if not isinstance(targets, list) or not all(isinstance(t, dict) for t in targets):
            continue
        keys = [(t.get("type"), t.get("id")) for t in targets]
        if len(set(keys)) < len(keys):
            return True
        if len(json.dumps(targets, separators=(",", ":"))) > limits.max_targets_bytes // 2:
            return True  # near the bound: how the server counts bytes is not the schema's
    return False


def _huge_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return not fits_64_bits(value)
    if isinstance(value, dict):
        return any(_huge_integer(item) for item in value.values())
    if isinstance(value, list):
        return any(_huge_integer(item) for item in value)
    return False
