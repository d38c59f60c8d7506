"""Every event, with its whole envelope: the audit log itself.

Sorted by (workspace, time, id) so a workspace's newest-first pages and time ranges read only
what they return; a projection sorted by actor serves an actor's pages the same way;
bloom-filter indexes make lookups by event id, stream and target skip almost every granule; an
n-gram index serves free-text search. ClickHouse computes the rows
from the stored events itself, so loading runs at its speed.
"""

from __future__ import annotations

from auditcore.readmodel import fields as f
from auditcore.readmodel.model import Column, EventTable, Filter, Table
from auditcore.readmodel.registry import register
from auditcore.readmodel.text import fold_sql


def parse_target(text: str) -> tuple[str, str]:
    target_type, separator, target_id = text.partition(":")
    if not separator or not target_type or not target_id:
        raise ValueError(f"{text!r} should be TYPE:ID, e.g. incident:3f2a…")
    return target_type, target_id


# Free text matches the action, the actor, the source, the targets and the metadata (keys and
# values, as its JSON text), folded once here (``auditcore.readmodel.text``).
SEARCHABLE = fold_sql(
    "concat_ws(' ', action, actor_id, actor_name, source, "
    "arrayStringConcat(target_types, ' '), arrayStringConcat(target_ids, ' '), "
    "arrayStringConcat(target_names, ' '), metadata)"
)

AUDIT_EVENTS = register(
    EventTable(
        name="audit_events",
        description="Every audit event, newest first per workspace.",
        table=Table(
            columns=(
                Column("workspace_id", "LowCardinality(String)"),
                Column(
                    "occurred_at",
                    "DateTime64(6, 'UTC')",
                    "CODEC(Delta, ZSTD(1))",
                    expr=f.moment("occurred_at"),
                ),
                Column("event_id", "UUID", expr="toUUID(event_id)"),
                Column("stream_id", "UUID", expr="toUUID(_stream_id)"),
                Column("version", "UInt32", expr="_version"),
                Column("position", "UInt64", "CODEC(Delta, ZSTD(1))", expr="_position"),
                Column("action", "LowCardinality(String)", expr="_action"),
                Column("schema_version", "UInt16"),
                Column("actor_id", "String", expr="actor.id"),
                Column("actor_type", "LowCardinality(String)", expr="actor.type"),
                Column("actor_name", "String", expr=f.optional("actor.name")),
                Column("target_types", "Array(LowCardinality(String))", expr=f.each_target("type")),
                Column("target_ids", "Array(String)", expr=f.each_target("id")),
                Column("target_names", "Array(String)", expr=f.each_target("name")),
                # The actor's and each target's own metadata (WorkOS's), JSON text; '' if none.
                Column(
                    "actor_metadata", "String", "CODEC(ZSTD(3))", expr=f.optional("actor.metadata")
                ),
                Column("target_metadata", "Array(String)", expr=f.each_target("metadata")),
                Column("source", "LowCardinality(String)"),
                Column(
                    "recorded_at",
                    "DateTime64(6, 'UTC')",
                    "CODEC(Delta, ZSTD(1))",
                    expr=f.moment("recorded_at"),
                ),
                Column("ip", "String", expr=f.optional("context.ip")),
                Column(
                    "user_agent", "String", "CODEC(ZSTD(3))", expr=f.optional("context.user_agent")
                ),
                Column("request_id", "String", expr=f.optional("context.request_id")),
                # The API key that wrote the event (HTTP API), whatever actor it names.
                Column("api_key_id", "String", expr=f.optional("context.api_key_id")),
                Column("location", "String", expr=f.optional("context.location")),
                Column("metadata", "String", "CODEC(ZSTD(3))"),
                Column("search_text", "String", "CODEC(ZSTD(3))", expr=SEARCHABLE),
            ),
            engine="MergeTree",
            order_by=("workspace_id", "occurred_at", "event_id"),
            # Yearly: a backfill of decades of history touches few partitions per batch, and
            # 1900-2299 is at most 400 of them.
            partition_by="toYear(occurred_at)",
            indexes=(
                "INDEX event_id_bf event_id TYPE bloom_filter(0.001) GRANULARITY 1",
                "INDEX stream_id_bf stream_id TYPE bloom_filter(0.001) GRANULARITY 1",
                "INDEX actor_id_bf actor_id TYPE bloom_filter(0.01) GRANULARITY 1",
                "INDEX target_ids_bf target_ids TYPE bloom_filter(0.01) GRANULARITY 1",
                "INDEX search_ngram search_text TYPE ngrambf_v1(3, 65536, 2, 0) GRANULARITY 1",
                # An actor's newest events, without scanning the workspace's whole time range.
                "PROJECTION by_actor (SELECT * ORDER BY workspace_id, actor_id, occurred_at, "
                "event_id)",
            ),
            # Partial rebuilds delete rows; the projection is rebuilt for the parts touched.
            settings={
                "index_granularity": 8192,
                "lightweight_mutation_projection_mode": "'rebuild'",
            },
        ),
        filters=(
            Filter(
                "action",
                "action = {value:String}",
                "exact action, e.g. incident.resolved",
                live=lambda event, value: event.action == value,
            ),
            Filter(
                "action_prefix",
                "startsWith(action, {value:String})",
                "action prefix, e.g. incident.",
                live=lambda event, value: event.action.startswith(value),
            ),
            Filter(
                "actor_id",
                "actor_id = {value:String}",
                "the actor's id, e.g. user_alice",
                # Reading in the main key's order would rule out the by_actor projection.
                settings={"optimize_read_in_order": 0},
                live=lambda event, value: event.actor.id == value,
            ),
            Filter(
                "actor_type",
                "actor_type = {value:String}",
                "user, api_key, system, service",
                live=lambda event, value: event.actor.type == value,
            ),
            Filter(
                "target",
                "has(target_ids, tupleElement({value:Tuple(String, String)}, 2)) "
                "AND has(arrayZip(target_types, target_ids), {value:Tuple(String, String)})",
                "one target as TYPE:ID, e.g. incident:3f2a…",
                parse=parse_target,
                value_schema={"pattern": "^[^:]+:[\\s\\S]+$"},
                live=lambda event, value: any((t.type, t.id) == value for t in event.targets),
            ),
            Filter(
                "target_type",
                "has(target_types, {value:String})",
                "a target's type, e.g. incident",
                live=lambda event, value: any(t.type == value for t in event.targets),
            ),
            Filter(
                "target_id",
                "has(target_ids, {value:String})",
                "a target's id",
                live=lambda event, value: any(t.id == value for t in event.targets),
            ),
            Filter(
                "source",
                "source = {value:String}",
                "where it came from: api, dashboard, cli, system…",
                live=lambda event, value: event.source == value,
            ),
            Filter(
                "api_key_id",
                "api_key_id = {value:String}",
                "the API key that wrote it, e.g. key_3f2a…",
                live=lambda event, value: event.context.api_key_id == value,
            ),
            Filter(
                "stream_id",
                "stream_id = {value:UUID}",
                "one stream (aggregate) id",
                value_schema={"format": "uuid"},
                live=lambda event, value: event.stream_id == value,
            ),
        ),
        text_column="search_text",
        text_folded=True,
        time_column="occurred_at",
    )
)
