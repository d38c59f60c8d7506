"""Exports: CSV/JSONL parse back to exactly the queried events, spreadsheet-safe cells,
flat memory at 1,000,000 events, and every export recorded as an audit event."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditcore import Actor, AuditCore, AuditEvent, RequestContext, Settings, Target
from auditcore.readmodel.export import (
    CSV_COLUMNS,
    ExportFormat,
    csv_cells,
    export_chunks,
    neutralise_formula,
)
from auditcore.readmodel.queries import EventQuery, WorkspaceReader
from tests.clickhouse_server import ClickHouseStandIn
from tests.dataset import build, registry_with_notes
from tests.test_api import INCIDENT, Deployment, api  # noqa: F401 - the api fixture

FORMULAS = ("=1+1", "+SUM(A1:A9)", "-2+3", "@cmd", '=HYPERLINK("http://evil")')


def _all_events(reader: WorkspaceReader, query: EventQuery) -> list[AuditEvent]:
    events, cursor = [], None
    while True:
        page = reader.events(
            EventQuery(query.filters, query.since, query.until, query.text, 1000, cursor)
        )
        events += page.items
        cursor = page.next_cursor
        if cursor is None:
            return events


def _record_formulas(audit: AuditCore) -> None:
    for index, formula in enumerate(FORMULAS):
        audit.record(
            "note.added",
            workspace_id="acme",
            metadata={"body": formula},
            actor=Actor(id=f"user_{index}", name=formula),
            targets=[Target(type="document", id=f"doc{index}", name=formula)],
        )


def test_csv_and_jsonl_parse_back_to_exactly_the_queried_events(pg_settings: Settings) -> None:
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        build(audit, streams=30, notes=40)
        _record_formulas(audit)
        audit.project()
        reader = audit.reader("acme")
        for query in (
            EventQuery(),
            EventQuery(filters={"action_prefix": ["incident."]}),
            EventQuery(filters={"actor_id": ["user_ana", "user_ben"]}, text="incident"),
        ):
            expected = _all_events(reader, query)
            assert expected
            # A small page size: the export crosses many pages.
            csv_bytes = b"".join(export_chunks(reader, query, ExportFormat.CSV, page_size=7))
            rows = list(csv.reader(io.StringIO(csv_bytes.decode())))
            assert tuple(rows[0]) == CSV_COLUMNS
            assert rows[1:] == [csv_cells(event.summary()) for event in expected]
            jsonl = b"".join(export_chunks(reader, query, ExportFormat.JSONL, page_size=7))
            parsed = [AuditEvent.model_validate_json(line) for line in jsonl.splitlines()]
            assert parsed == expected


def test_formula_cells_are_neutralised(pg_settings: Settings) -> None:
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        _record_formulas(audit)
        audit.project()
        exported = b"".join(export_chunks(audit.reader("acme"), EventQuery(), ExportFormat.CSV))
    rows = list(csv.DictReader(io.StringIO(exported.decode())))
    assert len(rows) == len(FORMULAS)
    assert sorted(row["actor_name"] for row in rows) == sorted(f"'{f}" for f in FORMULAS)
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@")) for cell in row.values())
        # Inside JSON cells the value is quoted, so a spreadsheet shows it as text anyway.
        assert json.loads(row["metadata"])["body"] in FORMULAS


@given(st.text(max_size=30))
def test_no_cell_can_start_a_formula(text: str) -> None:
    cell = neutralise_formula(text)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert cell in (text, "'" + text)


def test_http_export_is_scoped_streamed_and_audited(api: Deployment) -> None:  # noqa: F811
    with api.client() as client:
        mine = client.post("/v1/events", json=[INCIDENT] * 3).json()["ids"]
    with api.client("globex") as client:
        client.post("/v1/events", json=INCIDENT)
    api.projected("acme", 3)
    api.projected("globex", 1)
    with api.client("acme_read", **{"User-Agent": "auditor/1"}) as client:
        response = client.get("/v1/events/export", params={"action": "incident.opened"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert sorted(row["event_id"] for row in rows) == sorted(mine)
        jsonl = client.get(
            "/v1/events/export", params={"format": "jsonl", "action": "incident.opened"}
        )
        assert sorted(json.loads(line)["event_id"] for line in jsonl.text.splitlines()) == sorted(
            mine
        )
        assert client.get("/v1/events/export", params={"format": "xlsx"}).status_code == 400
        assert client.get("/v1/events/export", params={"since": "soon"}).status_code == 400
    with api.client(None) as client:
        assert client.get("/v1/events/export").status_code == 401
    # Each export is in the workspace's own trail: who, what query, from where.
    exports = api.projected("acme_read", 2, action="auditcore.export.created")
    assert len(exports) == 2
    newest = exports[0]
    assert newest["actor"]["type"] == "api_key"
    assert newest["actor"]["name"] == "ro"
    assert newest["metadata"] == {"filters": {"action": ["incident.opened"]}, "format": "jsonl"}
    assert newest["context"]["user_agent"] == "auditor/1"
    with api.client("globex") as client:
        theirs = client.get("/v1/events", params={"action": "auditcore.export.created"})
        assert theirs.json()["items"] == []


def _worker(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tests.export_worker", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parent.parent,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def _peak_rss(tmp_path: Path, clickhouse: str, rows: int) -> tuple[int, int]:
    """Peak RSS of exporting ``rows`` events, and of a process that only opens the stores.
    ``clickhouse``: a server URL, or ``-`` for an embedded engine of the worker's own."""
    directory = tmp_path / f"n{rows}"
    directory.mkdir()
    _worker("load", str(directory), clickhouse, str(rows))
    out = directory / "export.csv"
    report = json.loads(_worker("export", str(directory), clickhouse, str(out)).splitlines()[-1])
    with out.open("rb") as file:
        assert sum(1 for _ in file) == rows + 1
    floor = json.loads(_worker("floor", str(directory), clickhouse).splitlines()[-1])
    return int(report["peak_rss"]), int(floor["peak_rss"])


def test_memory_stays_flat_on_a_million_event_export(
    tmp_path: Path, clickhouse_engine: str, request: pytest.FixtureRequest
) -> None:
    """On both engines: on a server, the exporting process (the client) holds one page. The
    server runs 10,000 and 100,000 events (each page is an HTTP round trip through the
    stand-in's Python: the million took 6 minutes), still ten times the events, where holding
    them would take about 300 MB."""
    if clickhouse_engine == "chdb":
        small_url = large_url = "-"  # each size in a directory (an engine) of its own
        sizes = (100_000, 1_000_000)
    else:
        server: ClickHouseStandIn = request.getfixturevalue("clickhouse_server")
        small_url, large_url = (server.url(f"x_{uuid4().hex[:12]}") for _ in range(2))
        sizes = (10_000, 100_000)
    small, _ = _peak_rss(tmp_path, small_url, sizes[0])
    large, floor = _peak_rss(tmp_path, large_url, sizes[1])
    # Ten times the events, (almost) the same memory: the export holds one page at a time.
    assert large - small < 64 * 2**20, (small, large)
    # Above a process that only opens the stores (the embedded ClickHouse engine's footprint
    # differs between machines, so it is measured, not assumed): one page and its query,
    # ~130 MB here, where holding the million events takes over 3 GB (see the benchmark).
    assert large - floor < 256 * 2**20, (floor, large)


# Cells that trip formatters: every CSV special, JSON escapes (control characters, U+2028),
# formula prefixes after the quote, scripts from right-to-left to astral, empty and long.
HOSTILE = (
    "", "plain", 'say "hi", then\r\nleave', "=cmd|' /C calc'!A0", "\t=tab", "\r=cr",
    "-1", "@SUM(1)", "+", "back\\slash/and/slashes", "ctl \x01\x08\x0b\x0c\x1f\x7f end",
    "line\u2028sep\u2029para", "نص عربي", "עברית", "東京タワー",
    "\U0001d518\U0001d52b astral \U0001f525\U0001f469\u200d\U0001f467",
    "e\u0301", "\ufeffbom", "x" * 4000, "'already quoted", '"', ",", "\n",
)  # fmt: skip


def _hostile_events(audit: AuditCore) -> None:
    for index, text in enumerate(HOSTILE):
        party = {"role": text[:500], "level": index, "ok": True} if index % 2 else None
        audit.record(
            "note.added",
            workspace_id="acme",
            metadata={"body": text[:500], "z": 1.5, "a": -0.0, "flag": True, "none": None, "n": -7},
            # WorkOS's own fields on every other event: present, absent, and hostile too.
            actor=Actor(id=f"actor {text}"[:200], name=text[:256] or None, metadata=party),
            targets=[
                Target(type="document", id=f"doc{index}", name=text[:256] or None, metadata=party),
                Target(type="file.v2", id=text[:100] or "empty", name=None),
            ],
            source=("api", "cli", "dashboard")[index % 3],
            context=RequestContext(
                user_agent=text[:1024] or None,
                request_id=text[:64] or None,
                location=(text[:256] or "203.0.113.9") if index % 2 else None,
            ),
            occurred_at=datetime(1900 + index * 5, 1 + index % 12, 1 + index, index % 24,
                                 tzinfo=UTC) + timedelta(microseconds=index * 99_999 % 1_000_000),
        )  # fmt: skip


def _same_cells(exported: list[str], expected: list[str]) -> None:
    """The same cells; JSON cells the same JSON (ClickHouse may escape U+2028 or write a
    control character's hex in capitals, which JSON reads the same)."""
    json_columns = {CSV_COLUMNS.index(c) for c in ("targets", "metadata", "actor_metadata")}
    for index, (got, want) in enumerate(zip(exported, expected, strict=True)):
        if index in json_columns and (got or want):
            assert json.loads(got) == json.loads(want), CSV_COLUMNS[index]
        else:
            assert got == want, (CSV_COLUMNS[index], got, want)


def test_hostile_cells_export_exactly(pg_settings: Settings) -> None:
    """ClickHouse writes the lines: every cell must come back as the Python formatter's would,
    through a CSV and a JSON parser, whatever the text and the century."""
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        _hostile_events(audit)
        audit.project()
        reader = audit.reader("acme")
        expected = _all_events(reader, EventQuery())
        assert len(expected) == len(HOSTILE)
        for page_size in (1, 5, 10_000):
            csv_bytes = b"".join(
                export_chunks(reader, EventQuery(), ExportFormat.CSV, page_size=page_size)
            )
            rows = list(csv.reader(io.StringIO(csv_bytes.decode(), newline="")))
            assert tuple(rows[0]) == CSV_COLUMNS
            assert len(rows) == len(expected) + 1
            for row, event in zip(rows[1:], expected, strict=True):
                _same_cells(row, csv_cells(event.summary()))
                assert not row[CSV_COLUMNS.index("actor_name")].startswith(("=", "+", "-", "@"))
            jsonl = b"".join(
                export_chunks(reader, EventQuery(), ExportFormat.JSONL, page_size=page_size)
            )
            lines = jsonl.split(b"\n")
            assert lines[-1] == b""
            parsed = [AuditEvent.model_validate_json(line) for line in lines[:-1]]
            assert parsed == expected
            assert [json.loads(line) for line in lines[:-1]] == [e.summary() for e in expected]
