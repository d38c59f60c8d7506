"""Every event, with its whole envelope: the audit log itself.

Sorted by (workspace, time, id) so a workspace's newest-first pages and time ranges read only
what they return; bloom-filter indexes make lookups by event id, stream, actor and target skip
almost every granule; an n-gram index serves free-text search.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from auditcore.projection.records import EventRecord
from auditcore.readmodel.model import Column, EventTable, Filter, Row, Table
from auditcore.readmodel.registry import register


def searchable_text(record: EventRecord) -> str:
    """Lowercased words a person might search for: action, actor, targets, metadata values."""
    parts = [record.action, record.actor_id, record.actor_name or "", record.source]
    for target in record.targets:
        parts += [target["type"], target["id"], target.get("name") or ""]
    parts += [str(value) for value in _scalars(record.metadata)]
    return " ".join(part for part in parts if part).lower()


def _scalars(value: object) -> Iterator[object]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _scalars(item)
    elif isinstance(value, list):
        for item in value:
            yield from _scalars(item)
    elif value is not None:
        yield value


def parse_target(text: str) -> tuple[str, str]:
    target_type, separator, target_id = text.partition(":")
    if not separator or not target_type or not target_id:
        raise ValueError(f"{text!r} should be TYPE:ID, e.g. incident:3f2a…")
    return target_type, target_id


def to_rows(record: EventRecord) -> Iterator[Row]:
    yield {
        "workspace_id": record.workspace_id,
        "occurred_at": record.occurred_at,
        "event_id": record.event_id,
        "stream_id": record.stream_id,
        "version": record.version,
        "position": record.position,
        "action": record.action,
        "schema_version": record.schema_version,
        "actor_id": record.actor_id,
        "actor_type": record.actor_type,
        "actor_name": record.actor_name or "",
        "target_types": [target["type"] for target in record.targets],
        "target_ids": [target["id"] for target in record.targets],
        "target_names": [target.get("name") or "" for target in record.targets],
        "source": record.source,
        "recorded_at": record.recorded_at,
        "ip": record.context.get("ip") or "",
        "user_agent": record.context.get("user_agent") or "",
        "request_id": record.context.get("request_id") or "",
        "metadata": json.dumps(
            record.metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ),
        "search_text": searchable_text(record),
    }


AUDIT_EVENTS = register(
    EventTable(
        name="audit_events",
        description="Every audit event, newest first per workspace.",
        to_rows=to_rows,
        table=Table(
            columns=(
                Column("workspace_id", "LowCardinality(String)"),
                Column("occurred_at", "DateTime64(6, 'UTC')", "CODEC(Delta, ZSTD(1))"),
                Column("event_id", "UUID"),
                Column("stream_id", "UUID"),
                Column("version", "UInt32"),
                Column("position", "UInt64", "CODEC(Delta, ZSTD(1))"),
                Column("action", "LowCardinality(String)"),
                Column("schema_version", "UInt16"),
                Column("actor_id", "String"),
                Column("actor_type", "LowCardinality(String)"),
                Column("actor_name", "String"),
                Column("target_types", "Array(LowCardinality(String))"),
                Column("target_ids", "Array(String)"),
                Column("target_names", "Array(String)"),
                Column("source", "LowCardinality(String)"),
                Column("recorded_at", "DateTime64(6, 'UTC')", "CODEC(Delta, ZSTD(1))"),
                Column("ip", "String"),
                Column("user_agent", "String", "CODEC(ZSTD(3))"),
                Column("request_id", "String"),
                Column("metadata", "String", "CODEC(ZSTD(3))"),
                Column("search_text", "String", "CODEC(ZSTD(3))"),
            ),
            engine="MergeTree",
            order_by=("workspace_id", "occurred_at", "event_id"),
            partition_by="toYYYYMM(occurred_at)",
            indexes=(
                "INDEX event_id_bf event_id TYPE bloom_filter(0.001) GRANULARITY 1",
                "INDEX stream_id_bf stream_id TYPE bloom_filter(0.001) GRANULARITY 1",
                "INDEX actor_id_bf actor_id TYPE bloom_filter(0.01) GRANULARITY 1",
                "INDEX target_ids_bf target_ids TYPE bloom_filter(0.01) GRANULARITY 1",
                "INDEX search_ngram search_text TYPE ngrambf_v1(3, 65536, 2, 0) GRANULARITY 1",
            ),
            settings={"index_granularity": 8192},
        ),
        filters=(
            Filter("action", "action = {value:String}", "exact action, e.g. incident.resolved"),
            Filter(
                "action_prefix",
                "startsWith(action, {value:String})",
                "action prefix, e.g. incident.",
            ),
            Filter("actor_id", "actor_id = {value:String}"),
            Filter("actor_type", "actor_type = {value:String}", "user, api_key, system, service"),
            Filter(
                "target",
                "has(target_ids, tupleElement({value:Tuple(String, String)}, 2)) "
                "AND has(arrayZip(target_types, target_ids), {value:Tuple(String, String)})",
                "one target as TYPE:ID, e.g. incident:3f2a…",
                parse=parse_target,
            ),
            Filter("target_type", "has(target_types, {value:String})"),
            Filter("target_id", "has(target_ids, {value:String})"),
            Filter("source", "source = {value:String}"),
            Filter("stream_id", "stream_id = {value:UUID}"),
        ),
        text_column="search_text",
        time_column="occurred_at",
    )
)
