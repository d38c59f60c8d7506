"""Exports: a query's whole result as CSV or JSON Lines, streamed a page at a time.

Rows go from ClickHouse to bytes without building event models, and only one page is held at
a time, so memory stays flat whatever the size. CSV has one flat row per event (targets and
metadata as canonical JSON) and is safe to open in a spreadsheet. Every export is itself
recorded as an audit event: who exported what.
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
    "user_agent", "request_id", "metadata", "recorded_at", "api_key_id",
)  # fmt: skip

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
        "targets": _canonical(summary["targets"]),
        "metadata": _canonical(summary["metadata"]),
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
    from auditcore.readmodel.queries import summary_from_row  # noqa: PLC0415

    if output is ExportFormat.CSV:
        yield _csv_text([list(CSV_COLUMNS)])
    for rows in reader.rows(query, page_size):
        summaries = [summary_from_row(row) for row in rows]
        if output is ExportFormat.CSV:
            yield _csv_text([csv_cells(summary) for summary in summaries])
        else:
            yield b"".join(orjson.dumps(summary) + b"\n" for summary in summaries)
        if progress is not None:
            progress(len(rows))


def _csv_text(rows: list[list[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(rows)
    return buffer.getvalue().encode()


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
