"""Reports: every figure equals the read-model query (and the independent count) it
summarises; the HTML shows them, is self-contained, and generating it is audited."""

from __future__ import annotations

import re
from collections import Counter
from datetime import UTC, datetime, timedelta

from auditcore import AuditCore, Settings
from auditcore.readmodel.queries import EventQuery
from auditcore.report import build_report, render_report
from auditcore.report.render import duration
from tests.dataset import START, build, registry_with_notes
from tests.test_api import INCIDENT, Deployment, api  # noqa: F401 - the api fixture
from tests.test_export import _all_events

NOW = datetime(2026, 11, 25, tzinfo=UTC)


def test_report_figures_equal_the_queries_they_summarise(pg_settings: Settings) -> None:
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        dataset = build(audit, streams=45, notes=60)
        audit.project()
        reader = audit.reader("acme")
        # A period cutting through the data, not aligned to hours: it widens to whole hours.
        report = build_report(
            reader,
            START + timedelta(hours=20, minutes=17),
            START + timedelta(days=2, minutes=5),
            now=NOW,
            detail_limit=40,
        )
        assert report.since == START + timedelta(hours=20)
        assert report.until == START + timedelta(days=2, hours=1)
        period = EventQuery(since=report.since, until=report.until)
        inside = [
            event
            for event in dataset.in_workspace("acme")
            if report.since <= event.occurred_at < report.until
        ]
        assert report.total == reader.count(period) == len(inside) > 0
        assert sum(bucket.events for bucket in report.activity.buckets) == report.total

        actions = Counter(event.action for event in inside)
        assert {r.key: r.events for r in report.top_actions} == dict(actions.most_common(10))
        actors = Counter(event.actor.id for event in inside)
        assert [r.events for r in report.top_actors] == [n for _, n in actors.most_common(10)]
        for ranked in report.top_actors:
            assert actors[ranked.key] == ranked.events
        targets = Counter(f"{t.type}:{t.id}" for event in inside for t in event.targets)
        for ranked in report.top_targets:
            assert targets[ranked.key] == ranked.events
        assert {r.key: r.events for r in report.sources} == Counter(e.source for e in inside)

        # The detail table is the newest events of the period, as the events query pages them.
        assert report.events == _all_events(reader, period)[:40]
        assert report.events_truncated

        incidents = {
            str(row["incident_id"]): row for row in reader.current("incidents", limit=1000)
        }
        opened = {str(e.stream_id) for e in inside if e.action == "incident.opened"}
        assert {i.incident_id for i in report.incidents} == opened
        for incident in report.incidents:
            row = incidents[incident.incident_id]
            assert incident.opened_at == row["opened_at"]
            if row["acknowledged_at"]:
                assert incident.time_to_acknowledge == row["acknowledged_at"] - row["opened_at"]
            if row["resolved_at"]:
                assert incident.time_to_resolve == row["resolved_at"] - row["opened_at"]

        went_down = Counter(str(e.stream_id) for e in inside if e.action == "monitor.went_down")
        downtime = Counter[str]()
        for event in inside:
            if event.action == "monitor.recovered":
                downtime[str(event.stream_id)] += event.metadata["downtime_seconds"]  # type: ignore[assignment]
        assert {m.monitor_id: m.outages for m in report.monitors if m.outages} == dict(went_down)
        for monitor in report.monitors:
            assert monitor.downtime == timedelta(seconds=downtime[monitor.monitor_id])

        html = render_report(report)
    assert f'<b id="total-events">{report.total:,}</b>' in html
    for ranked in report.top_actions:
        assert re.search(rf"{re.escape(ranked.label)}</td><td class=\"n\">{ranked.events:,}<", html)
    for incident in report.incidents:
        assert duration(incident.time_to_resolve) in html
    # Self-contained: nothing to fetch, nothing to run.
    assert "<script" not in html
    assert not re.search(r"(src|href)=\"https?:", html)
    assert html.count("<rect") >= len(report.activity.buckets)


def test_html_is_escaped(pg_settings: Settings) -> None:
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        audit.record(
            "note.added",
            workspace_id="acme",
            actor={"id": "u1", "name": "<script>alert(1)</script>"},
            targets=[{"type": "doc", "id": "d1", "name": "<img src=x onerror=alert(1)>"}],
            # Inside the report's period whatever day the test runs (it ends a day after NOW).
            occurred_at=NOW - timedelta(hours=1),
        )
        audit.project()
        html = render_report(
            build_report(
                audit.reader("acme"), NOW - timedelta(days=400), NOW + timedelta(days=1), now=NOW
            )
        )
    assert "<script>alert" not in html
    assert "<img src=x" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_report_over_http_is_scoped_and_audited(api: Deployment) -> None:  # noqa: F811
    with api.client() as client:
        client.post("/v1/events", json=[INCIDENT] * 2)
    with api.client("globex") as client:
        client.post("/v1/events", json=[INCIDENT] * 5)
    api.projected("acme", 2)
    api.projected("globex", 5)
    with api.client("acme_read") as client:
        response = client.get("/v1/reports", params={"since": "1h"})
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/html")
        assert "Audit report: acme" in response.text
        assert '<b id="total-events">2</b>' in response.text
        assert client.get("/v1/reports").status_code == 400
        assert client.get("/v1/reports", params={"since": "1h", "colour": "x"}).status_code == 400
    with api.client(None) as client:
        assert client.get("/v1/reports", params={"since": "1h"}).status_code == 401
    (generated,) = api.projected("acme_read", 1, action="auditcore.report.generated")
    assert generated["actor"]["name"] == "ro"
    assert generated["metadata"]["events"] == 2
