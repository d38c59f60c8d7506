"""Exports: a query's whole result as CSV or JSON Lines, streamed a page at a time.

ClickHouse writes each event's line itself (the SQL below), so an export costs this process one
string per event: on a server shared by many workspaces, a big export must not hold the
interpreter that every other tenant's requests need. Only one page is held at a time, so
memory stays flat whatever the size. CSV has one flat row per event (targets and metadata as
JSON with sorted keys), the cells of ``csv_cells``, and is safe to open in a spreadsheet.
Every export is itself recorded as an audit event: who exported what.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

from auditcore.events.envelope import Actor, AuditEvent, RequestContext, Target
from auditcore.events.limits import MetadataLimits

CSV_COLUMNS = (
    "occurred_at", "event_id", "workspace_id", "stream_id", "version", "action",
    "schema_version", "actor_id", "actor_type", "actor_name", "targets", "source", "ip",
    "user_agent", "request_id", "metadata", "recorded_at", "api_key_id", "actor_metadata",
    "location",
)  # fmt: skip
"""The columns of a CSV export (WorkOS's actor metadata and location last: they came later);
the targets cell holds each target's own metadata."""

# A spreadsheet runs a cell starting with one of these as a formula (tab and CR included:
# some spreadsheets strip them first).
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

if TYPE_CHECKING:
    from auditcore.facade import AuditCore
    from auditcore.readmodel.queries import EventQuery, WorkspaceReader


class ExportFormat(StrEnum):
    CSV = "csv"
    JSONL = "jsonl"

    @property
    def media_type(self) -> str:
        return "text/csv; charset=utf-8" if self is ExportFormat.CSV else "application/x-ndjson"


def neutralise_formula(cell: str) -> str:
    """Make a cell that a spreadsheet would run as a formula plain text (OWASP's advice)."""
    return "'" + cell if cell.startswith(_FORMULA_PREFIXES) else cell


def _canonical(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def csv_cells(summary: dict[str, Any]) -> list[str]:
    """One event (as ``AuditEvent.summary()``) as a flat CSV row, in ``CSV_COLUMNS`` order."""
    actor, context = summary["actor"], summary["context"]
    flat = {
        **summary,
        "actor_id": actor["id"],
        "actor_type": actor["type"],
        "actor_name": actor["name"],
        "actor_metadata": _canonical(actor["metadata"]) if "metadata" in actor else None,
        "targets": _canonical(summary["targets"]),
        "metadata": _canonical(summary["metadata"]),
        "location": None,
        **context,
    }
    return [
        neutralise_formula(str(value) if (value := flat[column]) is not None else "")
        for column in CSV_COLUMNS
    ]


def export_chunks(
    reader: WorkspaceReader,
    query: EventQuery,
    output: ExportFormat,
    *,
    page_size: int = 10_000,
    progress: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """The export's bytes, one page of events per chunk, newest event first."""
    # Imported here: the query layer is heavy, and the command line imports this module for
    # its formats' names at start-up.

    if output is ExportFormat.CSV:
        yield _csv_text([list(CSV_COLUMNS)])
    line = CSV_LINE if output is ExportFormat.CSV else JSONL_LINE
    for text, events in reader.formatted(query, line, page_size):
        yield text
        if progress is not None:
            progress(events)


def _csv_text(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()


# The lines in SQL, over the columns of ``audit_events``: what ``summary_from_row`` and
# ``csv_cells`` make of a row, written by ClickHouse (tests/test_export.py holds them equal).


def _moment_sql(column: str) -> str:
    """As pydantic writes a UTC datetime: ISO 8601, microseconds only if any, then ``Z``."""
    return (
        f"concat(formatDateTime({column}, '%Y-%m-%dT%H:%i:%S', 'UTC'), "
        f"if(toUnixTimestamp64Micro({column}) % 1000000 = 0, '', "
        f"concat('.', formatDateTime({column}, '%f', 'UTC'))), 'Z')"
    )


def _json_or_null(column: str) -> str:
    """An optional text column (``''`` when absent) as JSON."""
    return f"if({column} = '', 'null', toJSONString({column}))"


def _member_if_any(key: str, column: str) -> str:
    """``,"key":`` and the JSON text in ``column``, or nothing where it is ``''`` (absent)."""
    return f"""if({column} = '', '', concat(',"{key}":', {column}))"""


_TARGETS_SQL = (
    """concat('[', arrayStringConcat(arrayMap((t, i, n, m) -> concat('{"id":', toJSONString(i), """
    f"""{_member_if_any("metadata", "m")}, ',"name":', {_json_or_null("n")}, """
    """',"type":', toJSONString(t), '}'), target_types, target_ids, target_names, """
    # Rows written before the column existed hold no target metadata at all.
    """arrayResize(target_metadata, length(target_ids), '')), ','), ']')"""
)
_CELLS_SQL = {
    "occurred_at": _moment_sql("occurred_at"),
    "event_id": "toString(event_id)",
    "workspace_id": "toString(workspace_id)",
    "stream_id": "toString(stream_id)",
    "version": "toString(version)",
    "action": "toString(action)",
    "schema_version": "toString(schema_version)",
    "actor_id": "actor_id",
    "actor_type": "toString(actor_type)",
    "actor_name": "actor_name",
    "targets": _TARGETS_SQL,
    "source": "toString(source)",
    "ip": "ip",
    "user_agent": "user_agent",
    "request_id": "request_id",
    "metadata": "metadata",
    "recorded_at": _moment_sql("recorded_at"),
    "api_key_id": "api_key_id",
    "actor_metadata": "actor_metadata",
    "location": "location",
}


_TEXT_COLUMNS = frozenset(
    ("workspace_id", "action", "actor_id", "actor_type", "actor_name", "source", "ip",
     "user_agent", "request_id", "api_key_id", "location")
)  # fmt: skip


def _csv_cell_sql(column: str) -> str:
    """``neutralise_formula``, then CSV quoting where a cell needs it (as Python's csv). Times,
    ids and numbers need neither; JSON starts with a bracket but holds quotes."""
    value = _CELLS_SQL[column]
    if column in ("targets", "metadata", "actor_metadata"):
        return f"""concat('"', replaceAll({value}, '"', '""'), '"')"""
    if column not in _TEXT_COLUMNS:
        return value
    safe = (
        rf"if(substring({value}, 1, 1) IN ('=', '+', '-', '@', '\t', '\r'), "
        f"concat('''', {value}), {value})"
    )
    return (
        rf"""if(multiSearchAny({safe}, [',', '"', '\r', '\n']), """
        f"""concat('"', replaceAll({safe}, '"', '""'), '"'), {safe})"""
    )


CSV_LINE = (
    "concat(" + ", ',', ".join(_csv_cell_sql(column) for column in CSV_COLUMNS) + r", '\r\n')"
)
"""One event as a CSV line, in ``CSV_COLUMNS`` order, ending in CRLF."""

JSONL_LINE = (
    """concat('{"event_id":"', toString(event_id), '","workspace_id":', """
    """toJSONString(toString(workspace_id)), ',"stream_id":"', toString(stream_id), """
    """'","version":', toString(version), ',"action":', toJSONString(toString(action)), """
    """',"schema_version":', toString(schema_version), ',"actor":{"id":', """
    """toJSONString(actor_id), ',"type":', toJSONString(toString(actor_type)), """
    f"""',"name":', {_json_or_null("actor_name")}, """
    f"""{_member_if_any("metadata", "actor_metadata")}, """
    f"""'}},"targets":', {_TARGETS_SQL}, """
    """',"source":', toJSONString(toString(source)), ',"occurred_at":"', """
    f"""{_moment_sql("occurred_at")}, '","recorded_at":"', {_moment_sql("recorded_at")}, """
    f"""'","context":{{"ip":', {_json_or_null("ip")}, ',"user_agent":', """
    f"""{_json_or_null("user_agent")}, ',"request_id":', {_json_or_null("request_id")}, """
    f"""',"api_key_id":', {_json_or_null("api_key_id")}, """
    f"""if(location = '', '', concat(',"location":', toJSONString(location))), """
    """'},"metadata":', metadata, """
    r"""'}\n')"""
)
"""One event as a line of JSON (the keys of ``AuditEvent.summary()``), ending in LF."""


def record_export(
    audit: AuditCore,
    workspace_id: str,
    query: EventQuery,
    output: ExportFormat,
    *,
    actor: Actor,
    source: str,
    context: RequestContext | None = None,
    proof_range: tuple[int, int] | None = None,
) -> AuditEvent:
    """Record that ``actor`` exported this query's events (before the first byte is sent);
    ``proof_range``: a proof export of the log's positions ``[from, to)``."""
    proof = (
        {"proof": True, "from_size": proof_range[0], "to_size": proof_range[1]}
        if proof_range
        else {}
    )
    metadata: dict[str, Any] = {
        "format": output.value,
        "since": query.since.isoformat() if query.since else None,
        "until": query.until.isoformat() if query.until else None,
        "recorded_since": query.recorded_since.isoformat() if query.recorded_since else None,
        "recorded_until": query.recorded_until.isoformat() if query.recorded_until else None,
        "text": query.text,
        **proof,
    }
    return audit.record_control_event(
        "auditcore.export.created",
        workspace_id=workspace_id,
        metadata=metadata | _bounded_filters(query.filters, metadata, audit.registry.limits),
        actor=actor,
        source=source,
        targets=[Target(type="audit_log", id=workspace_id)],
        context=context or RequestContext(),
    )


def _bounded_filters(
    filters: Mapping[str, Sequence[str]], metadata: dict[str, Any], limits: MetadataLimits
) -> dict[str, Any]:
    """The query's filter values, as many as the export event's metadata bounds leave room
    for (a query may name hundreds; the event must still be recorded), and how many were
    left out."""
    kept: dict[str, list[str]] = {}
    omitted = 0
    for name, values in filters.items():
        for value in values:
            trial = {**kept, name: [*kept.get(name, []), value]}
            candidate = {**metadata, "filters": trial, "filters_omitted": 1}
            if limits.check({k: v for k, v in candidate.items() if v is not None}):
                omitted += 1
            else:
                kept = trial
    return {"filters": kept, "filters_omitted": omitted or None}
