"""Queries: the read API's questions against the ClickHouse read model, beside the same data in
a PostgreSQL table with the indexes a careful engineer would add.

Both tables are filled by SQL with the same synthetic distribution (20 workspaces, 5,000
actors, 30 days, streams of ten events, a few dozen actions), so what is measured is the
querying, not the loading. The event store is filled by SQL too, with the PostgreSQL table's
ids: the point questions (by id, a stream's history) are timed on the path the read API takes
(the store, ``auditcore.store.points``), through ClickHouse (a reader without the store, as
before), over HTTP (the API in this process, a keep-alive client), and as the bare query.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from rich.table import Table

from auditcore import AuditCore, Settings
from auditcore.readmodel.queries import EventQuery, WorkspaceReader
from benchmarks.common import console, fresh_database, save_results

START = datetime(2026, 10, 1, tzinfo=UTC)
SPAN_SECONDS = 30 * 24 * 3600
ACTIONS = [
    f"{noun}.{verb}"
    for noun in ("incident", "monitor", "user", "api_key", "settings")
    for verb in ("created", "updated", "deleted", "viewed", "exported", "resolved")
]
REPEATS = 30


def fill_clickhouse(audit: AuditCore, count: int) -> None:
    actions = "[" + ", ".join(f"'{a}'" for a in ACTIONS) + "]"
    audit.migrate()
    audit.clickhouse.command(
        f"""
        INSERT INTO audit_events
        SELECT
            concat('ws', toString(number % 20)) AS workspace_id,
            toDateTime64('{START:%Y-%m-%d %H:%M:%S}', 6, 'UTC')
                + toIntervalMicrosecond(intDiv(number * {SPAN_SECONDS} * 1000000, {count}))
                AS occurred_at,
            generateUUIDv4(number) AS event_id,
            reinterpretAsUUID(reverse(unhex(lower(hex(cityHash64(intDiv(number, 10)))))))
                AS stream_id,
            toUInt32(number % 10 + 1) AS version,
            toUInt64(number + 1) AS position,
            {actions}[1 + cityHash64(number, 1) % {len(ACTIONS)}] AS action,
            toUInt16(1) AS schema_version,
            concat('user_', toString(cityHash64(number, 2) % 5000)) AS actor_id,
            'user' AS actor_type,
            concat('User ', toString(cityHash64(number, 2) % 5000)) AS actor_name,
            ['incident', 'user'] AS target_types,
            [concat('inc_', toString(intDiv(number, 10))), concat('user_', toString(number % 977))]
                AS target_ids,
            ['', ''] AS target_names,
            '' AS actor_metadata,
            ['', ''] AS target_metadata,
            ['api', 'dashboard', 'cli'][1 + number % 3] AS source,
            occurred_at AS recorded_at,
            '10.0.0.1' AS ip, '' AS user_agent, concat('req_', toString(number)) AS request_id,
            concat('key_', toString(number % 20)) AS api_key_id,
            '' AS location,
            concat('{{"note":"checked ', toString(cityHash64(number, 3) % 100000), '"}}')
                AS metadata,
            lower(concat_ws(' ', action, actor_id, actor_name, source, metadata)) AS search_text
        FROM numbers({count})
    """,
        settings={"max_insert_threads": 2},
    )
    audit.clickhouse.command("OPTIMIZE TABLE audit_events FINAL")


def fill_postgres(url: str, n: int) -> None:
    actions = "ARRAY[" + ", ".join(f"'{a}'" for a in ACTIONS) + "]"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        conn.execute("""
            CREATE TABLE audit_events (
                workspace_id text NOT NULL, occurred_at timestamptz NOT NULL,
                event_id uuid PRIMARY KEY, stream_id uuid NOT NULL, version int NOT NULL,
                action text NOT NULL, actor_id text NOT NULL, target_types text[] NOT NULL,
                target_ids text[] NOT NULL, source text NOT NULL, metadata jsonb NOT NULL,
                search_text text NOT NULL)
        """)
        conn.execute(f"""
            INSERT INTO audit_events
            SELECT 'ws' || (n % 20),
                   timestamptz '{START.isoformat()}'
                       + make_interval(secs => (n::float8 * {SPAN_SECONDS} / {n})),
                   md5(n::text)::uuid,
                   md5('stream' || (n / 10))::uuid,
                   n % 10 + 1,
                   ({actions})[1 + abs(hashint4(n)) % {len(ACTIONS)}],
                   'user_' || (abs(hashint4(n + 7)) % 5000),
                   ARRAY['incident', 'user'],
                   ARRAY['inc_' || (n / 10), 'user_' || (n % 977)],
                   (ARRAY['api', 'dashboard', 'cli'])[1 + n % 3],
                   jsonb_build_object('note', 'checked ' || (abs(hashint4(n + 3)) % 100000)),
                   ''
            FROM generate_series(0, {n} - 1) AS n
        """)
        conn.execute(
            "UPDATE audit_events SET search_text = lower(action || ' ' || actor_id "
            "|| ' ' || source || ' ' || metadata::text)"
        )
        for index in (
            "CREATE INDEX ON audit_events (workspace_id, occurred_at DESC, event_id DESC)",
            "CREATE INDEX ON audit_events (stream_id, version)",
            "CREATE INDEX ON audit_events "
            "(workspace_id, actor_id, occurred_at DESC, event_id DESC)",
            "CREATE INDEX ON audit_events USING gin (target_ids)",
            "CREATE INDEX ON audit_events USING gin (search_text gin_trgm_ops)",
        ):
            conn.execute(index)
        conn.execute("VACUUM ANALYZE audit_events")


@dataclass
class Result:
    question: str
    auditcore_ms: list[float]
    postgres_ms: list[float]

    @staticmethod
    def p(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def timed_ms(run: Callable[[int], Any]) -> list[float]:
    run(0)  # warm caches once, as a running service would have them
    samples = []
    for i in range(REPEATS):
        started = time.perf_counter()
        run(i)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def run(n: int) -> list[Result]:
    with (
        fresh_database("ac_bench_queries") as url,
        tempfile.TemporaryDirectory() as chdb,
        AuditCore(Settings(url, f"chdb://{chdb}")) as audit,
        psycopg.connect(url) as pg,
    ):
        console.print(f"filling ClickHouse with {n:,} events …")
        fill_clickhouse(audit, n)
        console.print(f"filling PostgreSQL with {n:,} events (and indexes) …")
        fill_postgres(url, n)
        console.print(f"filling the event store with {n:,} events …")
        fill_store(audit, url, n)
        sample = f"WHERE workspace_id = 'ws3' LIMIT {REPEATS + 1}"
        ch = audit.clickhouse
        ids = [r[0] for r in ch.query(f"SELECT event_id FROM audit_events {sample}").result_rows]
        streams = [
            r[0]
            for r in ch.query(f"SELECT DISTINCT stream_id FROM audit_events {sample}").result_rows
        ]
        pg_ids = [r[0] for r in pg.execute(f"SELECT event_id FROM audit_events {sample}")]
        pg_streams = [
            r[0] for r in pg.execute(f"SELECT DISTINCT stream_id FROM audit_events {sample}")
        ]
        results = measure(audit, pg, ids, streams, pg_ids, pg_streams)
        results[2:2] = measure_points(audit, pg, pg_ids, pg_streams)
        report(n, results, storage(audit, pg))
        return results


def fill_store(audit: AuditCore, url: str, n: int) -> None:
    """The store holds the PostgreSQL table's events (same ids, streams, versions), as the
    application stores them: the envelope's JSON under the action, and the id index."""
    recorder = audit.app.recorder
    events = recorder.events_table_name  # type: ignore[attr-defined]
    ids = recorder.event_ids_table_name  # type: ignore[attr-defined]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"""
            INSERT INTO {events} (originator_id, originator_version, topic, state)
            SELECT a.stream_id, a.version, a.action, convert_to(json_build_object(
                'event_id', a.event_id, 'workspace_id', a.workspace_id, 'schema_version', 1,
                'actor', json_build_object('id', a.actor_id, 'type', 'user',
                                           'name', 'User ' || substr(a.actor_id, 6)),
                'targets', json_build_array(
                    json_build_object('type', 'incident', 'id', a.target_ids[1], 'name', null),
                    json_build_object('type', 'user', 'id', a.target_ids[2], 'name', null)),
                'source', a.source,
                'occurred_at', to_char(a.occurred_at AT TIME ZONE 'UTC',
                                       'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'recorded_at', to_char(a.occurred_at AT TIME ZONE 'UTC',
                                       'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'context', json_build_object('ip', '10.0.0.1', 'user_agent', null,
                                             'request_id', 'req_1', 'api_key_id', null),
                'metadata', a.metadata)::text, 'UTF8')
            FROM audit_events AS a ORDER BY a.occurred_at
        """)
        conn.execute(f"""
            INSERT INTO {ids} (workspace_id, event_id, originator_id, originator_version)
            SELECT workspace_id, event_id, stream_id, version FROM audit_events
        """)
        conn.execute(f"VACUUM ANALYZE {events}")
        conn.execute(f"VACUUM ANALYZE {ids}")


def measure_points(
    audit: AuditCore, bare: psycopg.Connection[Any], pg_ids: list[Any], pg_streams: list[Any]
) -> list[Result]:
    """By id and a stream's history through the read API's path (the store) and over HTTP,
    each beside the bare PostgreSQL query on the same (indexed) table."""
    import httpx  # noqa: PLC0415
    from tests.apiserver import ServerThread  # noqa: PLC0415 - the test suite's server

    from auditcore.api import ApiConfig, create_app  # noqa: PLC0415
    from auditcore.api.config import ResourceLimits  # noqa: PLC0415
    from auditcore.tenancy import Directory, Scope  # noqa: PLC0415

    reader = audit.reader("ws3")
    by_id = "SELECT * FROM audit_events WHERE event_id = %s"
    by_stream = "SELECT * FROM audit_events WHERE stream_id = %s ORDER BY version"
    directory = Directory(audit.settings)
    try:
        directory.create_workspace("ws3")
        token = directory.create_key("ws3", "bench", [Scope.READ]).token
        config = ApiConfig(run_processors=False, limits=ResourceLimits(rate_per_second=0))
        with (
            ServerThread(create_app(audit, directory, config)) as server,
            httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as web,
        ):
            return [
                Result(
                    "event by id, from the store (read API)",
                    timed_ms(lambda i: reader.get(pg_ids[i])),
                    timed_ms(lambda i: bare.execute(by_id, (pg_ids[i],)).fetchall()),
                ),
                Result(
                    "a stream's history, from the store (read API)",
                    timed_ms(lambda i: reader.history(pg_streams[i])),
                    timed_ms(lambda i: bare.execute(by_stream, (pg_streams[i],)).fetchall()),
                ),
                Result(
                    "event by id over HTTP (GET /v1/events/ID)",
                    timed_ms(lambda i: web.get(f"/v1/events/{pg_ids[i]}").raise_for_status()),
                    timed_ms(lambda i: bare.execute(by_id, (pg_ids[i],)).fetchall()),
                ),
                Result(
                    "a stream's history over HTTP",
                    timed_ms(
                        lambda i: web.get(f"/v1/streams/{pg_streams[i]}/events").raise_for_status()
                    ),
                    timed_ms(lambda i: bare.execute(by_stream, (pg_streams[i],)).fetchall()),
                ),
            ]
    finally:
        directory.close()


def measure(
    audit: AuditCore,
    pg: psycopg.Connection[Any],
    ids: list[Any],
    streams: list[Any],
    pg_ids: list[Any],
    pg_streams: list[Any],
) -> list[Result]:
    reader = audit.reader("ws3")
    # Point questions through ClickHouse: a reader without the store (what they cost before).
    projected = WorkspaceReader(
        audit.clickhouse_clients, audit.read_models, "ws3", cursor_key=lambda: b"unused" * 6
    )
    busiest = (
        "SELECT actor_id FROM audit_events WHERE workspace_id = 'ws3' "
        "GROUP BY actor_id ORDER BY count(*) DESC, actor_id LIMIT 1"
    )
    actor = audit.clickhouse.query(busiest).result_rows[0][0]
    pg_actor = pg.execute(busiest).fetchall()[0][0]
    second_page_cursor = reader.events(EventQuery({"actor_id": [actor]}, limit=50)).next_cursor
    first_page = pg.execute(
        "SELECT occurred_at, event_id FROM audit_events WHERE workspace_id = 'ws3' AND "
        "actor_id = %s ORDER BY occurred_at DESC, event_id DESC LIMIT 50",
        (pg_actor,),
    ).fetchall()
    last_at, last_id = first_page[-1]
    day_start = START + timedelta(days=10)

    def pg_query(sql: str, params: tuple[Any, ...] = ()) -> Callable[[int], Any]:
        return lambda i: pg.execute(sql, params).fetchall()

    return [
        Result(
            "event by id, through ClickHouse",
            timed_ms(lambda i: projected.get(ids[i])),
            timed_ms(
                lambda i: pg.execute(
                    "SELECT * FROM audit_events WHERE event_id = %s", (pg_ids[i],)
                ).fetchall()
            ),
        ),
        Result(
            "a stream's history, through ClickHouse",
            timed_ms(lambda i: projected.history(streams[i])),
            timed_ms(
                lambda i: pg.execute(
                    "SELECT * FROM audit_events WHERE stream_id = %s ORDER BY version",
                    (pg_streams[i],),
                ).fetchall()
            ),
        ),
        Result(
            "an actor's newest 50",
            timed_ms(lambda i: reader.events(EventQuery({"actor_id": [actor]}, limit=50))),
            timed_ms(
                pg_query(
                    "SELECT * FROM audit_events WHERE workspace_id = 'ws3' AND actor_id = %s "
                    "ORDER BY occurred_at DESC, event_id DESC LIMIT 50",
                    (pg_actor,),
                )
            ),
        ),
        Result(
            "the second keyset page",
            timed_ms(
                lambda i: reader.events(
                    EventQuery({"actor_id": [actor]}, limit=50, cursor=second_page_cursor)
                )
            ),
            timed_ms(
                pg_query(
                    "SELECT * FROM audit_events WHERE workspace_id = 'ws3' AND actor_id = %s AND "
                    "(occurred_at, event_id) < (%s, %s) ORDER BY occurred_at DESC, event_id DESC "
                    "LIMIT 50",
                    (pg_actor, last_at, last_id),
                )
            ),
        ),
        Result(
            "hourly counts by action, everything",
            timed_ms(
                lambda i: (
                    audit.clickhouse.query(
                        "SELECT toStartOfHour(occurred_at) h, action, count() FROM audit_events "
                        "GROUP BY h, action"
                    ).result_rows
                )
            ),
            timed_ms(
                pg_query(
                    "SELECT date_trunc('hour', occurred_at) h, action, count(*) FROM audit_events "
                    "GROUP BY h, action"
                )
            ),
        ),
        Result(
            "per-minute counts by action, one workspace, 6 hours",
            timed_ms(
                lambda i: reader.stats(
                    group_by="action",
                    interval="minute",
                    since=day_start,
                    until=day_start + timedelta(hours=6),
                )
            ),
            timed_ms(
                pg_query(
                    "SELECT date_trunc('minute', occurred_at) m, action, count(*) "
                    "FROM audit_events WHERE workspace_id = 'ws3' AND occurred_at >= %s "
                    "AND occurred_at < %s "
                    "GROUP BY m, action",
                    (day_start, day_start + timedelta(hours=6)),
                )
            ),
        ),
        Result(
            "free-text search, newest 50",
            timed_ms(lambda i: reader.events(EventQuery(text="checked 4242", limit=50))),
            timed_ms(
                pg_query(
                    "SELECT * FROM audit_events WHERE workspace_id = 'ws3' AND search_text LIKE "
                    "'%%checked 4242%%' ORDER BY occurred_at DESC, event_id DESC LIMIT 50"
                )
            ),
        ),
    ]


def storage(audit: AuditCore, pg: psycopg.Connection[Any]) -> dict[str, int]:
    ch_bytes = int(
        audit.clickhouse.query(
            "SELECT sum(bytes_on_disk) FROM system.parts WHERE active AND table = 'audit_events' "
            "AND database = currentDatabase()"
        ).result_rows[0][0]
    )
    row = pg.execute("SELECT pg_total_relation_size('audit_events')").fetchone()
    return {"auditcore": ch_bytes, "postgres": int(row[0]) if row else 0}


def report(n: int, results: list[Result], sizes: dict[str, int]) -> None:
    table = Table(title=f"queries — {n:,} events (ms over {REPEATS} runs)", title_justify="left")
    for column in ("question", "auditcore p50", "p90", "PostgreSQL p50", "p90", "speed-up (p50)"):
        table.add_column(column, justify="left" if column == "question" else "right")
    for r in results:
        a50, p50 = statistics.median(r.auditcore_ms), statistics.median(r.postgres_ms)
        table.add_row(
            r.question,
            f"{a50:.1f}",
            f"{Result.p(r.auditcore_ms, 0.9):.1f}",
            f"{p50:.1f}",
            f"{Result.p(r.postgres_ms, 0.9):.1f}",
            f"{p50 / a50:.1f}x",
        )
    table.add_row(
        "storage (MB)",
        f"{sizes['auditcore'] / 1e6:,.0f}",
        "",
        f"{sizes['postgres'] / 1e6:,.0f}",
        "",
        f"{sizes['postgres'] / max(sizes['auditcore'], 1):.1f}x smaller",
    )
    console.print(table)
    save_results(
        f"queries_{n}",
        {
            "events": n,
            "storage_bytes": sizes,
            "rows": [
                {
                    "question": r.question,
                    "auditcore_ms": r.auditcore_ms,
                    "postgres_ms": r.postgres_ms,
                }
                for r in results
            ],
        },
    )
