"""SQL for the envelope fields of stored events, for read models whose rows ClickHouse
computes itself (the fast path: no per-event Python).

Such a read model reads a batch of stored events as rows with these columns: the store's own
``_position``, ``_stream_id``, ``_version`` and ``_action``, and the envelope's fields as
stored (parsed once per event by ClickHouse's JSON input format).
"""

from __future__ import annotations

SOURCE_STRUCTURE = (
    "_position UInt64, _stream_id String, _version UInt32, _action String, "
    "event_id String, workspace_id String, occurred_at String, recorded_at String, "
    "schema_version UInt16, source String, "
    "actor Tuple(id String, type String, name Nullable(String), metadata Nullable(String)), "
    "targets Array(Tuple(type String, id String, name Nullable(String), "
    "metadata Nullable(String))), "
    "context Tuple(ip Nullable(String), user_agent Nullable(String), "
    "request_id Nullable(String), api_key_id Nullable(String), location Nullable(String)), "
    "metadata String"
)
"""The batch's columns; ``metadata`` (and the actor's and targets' own, when present) is the
JSON text exactly as stored."""

SOURCE_SETTINGS: dict[str, str | int] = {
    "input_format_json_read_objects_as_strings": 1,
    "input_format_json_named_tuples_as_objects": 1,
    "input_format_json_defaults_for_missing_elements_in_named_tuple": 1,
    "input_format_skip_unknown_fields": 1,
}


EARLIEST = "1900-01-01 00:00:00"
LATEST = "2299-12-31 23:59:59.999999"
"""The moments every read model's time columns hold (``DateTime64``'s documented range)."""


def moment(field: str) -> str:
    """A UTC timestamp field, to the microsecond; a moment outside [EARLIEST, LATEST] is
    refused (the event is parked as a dead letter) rather than stored wrong."""
    parsed = f"parseDateTime64BestEffort({field}, 6, 'UTC')"
    outside = (
        f"NOT ({parsed} BETWEEN toDateTime64('{EARLIEST}', 6, 'UTC') "
        f"AND toDateTime64('{LATEST}', 6, 'UTC'))"
    )
    message = f"{field} is outside {EARLIEST[:10]}..{LATEST[:10]}, which read models hold"
    return f"addSeconds({parsed}, throwIf({outside}, '{message}'))"


def floor_to(expr: str, seconds: int) -> str:
    """A ``DateTime64`` rounded down to a whole number of ``seconds`` since 1970, over the
    whole range of ``moment`` (``toStartOfHour`` and ``toStartOfInterval`` return a
    ``DateTime``, which holds 1970-2106 only, unless a query setting says otherwise)."""
    # The same text as ever: it is part of read models' definitions (their fingerprints).
    return f"fromUnixTimestamp64Micro({floor_micros(expr, seconds)}, 'UTC')"


def floor_micros(expr: str, seconds: int) -> str:
    """``floor_to`` as microseconds since 1970 (an ``Int64``): a number, which no client turns
    into its machine's local time."""
    micros = f"toUnixTimestamp64Micro(toDateTime64({expr}, 6, 'UTC'))"
    return f"{micros} - positiveModulo({micros}, {seconds * 1_000_000})"


def optional(field: str) -> str:
    """A nullable text field, as ``''`` when absent."""
    return f"ifNull({field}, '')"


def each_target(field: str) -> str:
    """One field of every target, in order (``''`` where a target has none)."""
    return f"arrayMap(t -> ifNull(toString(t.{field}), ''), targets)"
