"""Reports: every figure equals the read-model query (and the independent count) it
summarises, all over one snapshot of the events even while others are written; the HTML shows
them, is self-contained, and generating it is audited."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from auditcore import AuditCore, Incident, Monitor, Settings
from auditcore.readmodel.queries import EventQuery
from auditcore.report import ReportData, build_report, render_report
from auditcore.report.chart import STEPS
from auditcore.report.data import snapshot_position
from auditcore.report.render import duration
from tests.cli_run import AUDITCORE
from tests.conftest import fresh_postgres_store
from tests.dataset import SOURCES, START, build, registry_with_notes
from tests.test_api import INCIDENT, Deployment, api  # noqa: F401 - the api fixture
from tests.test_export import _all_events

NOW = datetime(2026, 11, 25, tzinfo=UTC)
ROOT = Path(__file__).parent.parent
KILLS = int(os.environ.get("AUDITCORE_CRASH_KILLS", "12")) // 2


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
        # The snapshot's store position counts globex's events too: not told to acme.
        assert "position" not in response.text
        assert client.get("/v1/reports").status_code == 400
        assert client.get("/v1/reports", params={"since": "1h", "colour": "x"}).status_code == 400
    with api.client(None) as client:
        assert client.get("/v1/reports", params={"since": "1h"}).status_code == 401
    (generated,) = api.projected("acme_read", 1, action="auditcore.report.generated")
    assert generated["actor"]["name"] == "ro"
    assert generated["metadata"]["events"] == 2


def _agrees_with_itself(report: ReportData) -> None:
    """Every figure counts the events of the detail table (which holds them all here)."""
    events = report.events
    assert {event.workspace_id for event in events} <= {"acme"}
    assert report.total == len(events)
    sources = Counter(event.source for event in events)
    assert {r.key: r.events for r in report.sources} == sources
    assert sum(r.events for r in report.sources) == report.total
    assert report.other_sources == 0
    assert sum(r.events for r in report.top_actions) == report.total
    assert sum(bucket.events for bucket in report.activity.buckets) == report.total
    per_bucket = Counter[datetime]()
    for bucket in report.activity.buckets:
        per_bucket[bucket.bucket] += bucket.events
    step, start = STEPS[report.activity.interval], report.since
    assert per_bucket == Counter(start + (e.occurred_at - start) // step * step for e in events)
    actors = Counter(event.actor.id for event in events)
    assert report.actors == len(actors)
    assert sorted(r.events for r in report.top_actors) == sorted(
        n for _, n in actors.most_common(10)
    )
    html = render_report(report)
    assert f'<b id="total-events">{report.total:,}</b>' in html
    assert f'<b id="actors">{report.actors:,}</b>' in html
    assert "the same events: those the read model held when the report began" in html


def test_every_figure_counts_one_snapshot_under_concurrent_writes(
    pg_settings: Settings,
) -> None:
    """A writer records and projects batches without pause while reports are built: each
    report's total, by-source breakdown, action ranking, chart buckets, actor count and event
    table count the same events, every time."""
    now = datetime.now(UTC)
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        audit.project()
        stop = threading.Event()
        failures: list[BaseException] = []

        def write() -> None:
            rng = random.Random(17)
            try:
                while not stop.is_set():
                    drafts = [
                        {
                            "action": "note.added",
                            # Another tenant's events are in the same batches and tables.
                            "workspace_id": rng.choice(("acme", "acme", "globex")),
                            "actor": {"id": f"user_{rng.randrange(13)}"},
                            "source": rng.choice(SOURCES),
                            # Spread over many hours: the chart has hour buckets.
                            "occurred_at": now - timedelta(minutes=rng.randrange(11 * 60)),
                        }
                        for _ in range(rng.randrange(1, 8))
                    ]
                    audit.record_many(drafts)
                    audit.project()
            except BaseException as error:  # reported by the test thread
                failures.append(error)

        writer = threading.Thread(target=write)
        writer.start()
        reader = audit.reader("acme")
        positions: set[int] = set()
        reports = 0
        try:
            # Until the snapshot has moved on many times while reports were being built.
            while len(positions) < 15 and reports < 300:
                reports += 1
                report = build_report(
                    reader, now - timedelta(hours=12), now + timedelta(hours=1), now=now,
                    detail_limit=100_000,
                )  # fmt: skip
                assert report.activity.interval == "hour"
                _agrees_with_itself(report)
                positions.add(report.position)
        finally:
            stop.set()
            writer.join()
        assert not failures, failures
        assert len(positions) == 15, "the writer should have written while reports ran"


def test_a_report_is_taken_at_its_snapshot_position(pg_settings: Settings) -> None:
    """Built at an earlier position, a report shows the trail as it was then: later events,
    later acknowledgements included, are not counted anywhere."""
    now = datetime.now(UTC).replace(microsecond=0)
    opened_at = now - timedelta(hours=3)
    with AuditCore(pg_settings) as audit:
        who = {"actor": {"id": "user_ana"}, "source": "dashboard"}
        incident = Incident.open(
            "acme", title="checkout down", severity="sev1", service="checkout",
            occurred_at=opened_at, **who,
        )  # fmt: skip
        incident.acknowledge(occurred_at=opened_at + timedelta(minutes=4), **who)
        monitor = Monitor.create(
            "acme", name="checkout probe", url="https://shop.example/", occurred_at=opened_at,
            **who,
        )  # fmt: skip
        monitor.went_down("eu-west", "timeout", occurred_at=opened_at, **who)
        audit.save(incident, monitor)
        audit.project()
        reader = audit.reader("acme")
        before = snapshot_position(reader)
        incident.resolve("rolled back", occurred_at=opened_at + timedelta(minutes=30), **who)
        incident.comment("and again", occurred_at=opened_at + timedelta(minutes=31), **who)
        monitor.recovered("eu-west", occurred_at=opened_at + timedelta(minutes=20), **who)
        audit.save(incident, monitor)
        audit.project()
        assert snapshot_position(reader) == before + 3

        since, until = now - timedelta(hours=12), now + timedelta(hours=1)
        then = build_report(reader, since, until, now=now, position=before)
        later = build_report(reader, since, until, now=now)
    assert then.position == before
    assert (then.total, later.total) == (4, 7)
    assert sum(b.events for b in then.activity.buckets) == 4
    assert [r.events for r in then.sources] == [4]
    (was,) = then.incidents
    assert (was.status, was.resolved_at) == ("acknowledged", None)
    (now_is,) = later.incidents
    assert now_is.status == "resolved"
    assert now_is.time_to_resolve == timedelta(minutes=30)
    (monitor_was,) = then.monitors
    assert (monitor_was.name, monitor_was.state, monitor_was.outages) == (
        "checkout probe", "down", 1,
    )  # fmt: skip
    assert monitor_was.downtime == timedelta(0)
    (monitor_is,) = later.monitors
    assert (monitor_is.state, monitor_is.downtime) == ("up", timedelta(minutes=20))


def test_time_to_acknowledge_survives_a_reopen(pg_settings: Settings) -> None:
    """Acknowledge, resolve, reopen, acknowledge: the first acknowledgement counts."""
    now = datetime.now(UTC).replace(microsecond=0)
    with AuditCore(pg_settings) as audit:
        incidents = []
        for index, (ack, resolve) in enumerate([(5, 20), (15, 60)]):
            opened_at = now - timedelta(hours=5 - index)
            who = {"actor": {"id": "user_ben"}}
            incident = Incident.open(
                "acme", title=f"incident {index}", severity="sev2", service="search",
                occurred_at=opened_at, **who,
            )  # fmt: skip
            incident.acknowledge(occurred_at=opened_at + timedelta(minutes=ack), **who)
            incident.resolve("fixed", occurred_at=opened_at + timedelta(minutes=resolve), **who)
            incident.reopen("came back", occurred_at=opened_at + timedelta(minutes=90), **who)
            incident.acknowledge(occurred_at=opened_at + timedelta(minutes=95), **who)
            incidents.append(incident)
        audit.save(*incidents)
        audit.project()
        report = build_report(
            audit.reader("acme"), now - timedelta(hours=12), now + timedelta(hours=1), now=now
        )
    assert [i.status for i in report.incidents] == ["acknowledged", "acknowledged"]
    assert [i.time_to_acknowledge for i in report.incidents] == [
        timedelta(minutes=5),
        timedelta(minutes=15),
    ]
    assert [i.time_to_resolve for i in report.incidents] == [None, None]  # open again
    assert report.mean_time_to_acknowledge == timedelta(minutes=10)
    html = render_report(report)
    assert '<b id="mtta">10m 00s</b>' in html


def test_actor_count_is_exact_and_every_hour_is_charted(pg_settings: Settings) -> None:
    """13 actors read 13 (not "10+"); hours without events are in the chart, as empty."""
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=11)
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        audit.record_many(
            {
                "action": "note.added",
                "workspace_id": "acme",
                "actor": {"id": f"user_{n}", "name": f"User \u202e{n}"},
                "occurred_at": start + timedelta(hours=3 * (n % 2), minutes=n),
            }
            for n in range(13)
        )
        audit.project()
        report = build_report(
            audit.reader("acme"), start, start + timedelta(hours=12), now=start, detail_limit=5
        )
    assert report.actors == 13
    assert len(report.top_actors) == 10
    assert report.activity.interval == "hour"
    html = render_report(report)
    assert '<b id="actors">13</b>' in html
    titles = re.findall(r'<g class="bucket"><title>([^<]*)</title>', html)
    assert len(titles) == 12
    assert titles[0] == f"{start:%Y-%m-%d %H:%M} UTC: 7 events"
    assert titles[3] == f"{start + timedelta(hours=3):%Y-%m-%d %H:%M} UTC: 6 events"
    empty = [title for title in titles if title.endswith(" UTC: 0 events")]
    assert len(empty) == 10


def test_report_command_shows_no_empty_progress_bars(
    pg_settings: Settings, process_clickhouse_url: str, tmp_path: Path
) -> None:
    """With every read model caught up, the command projects nothing and shows no "0/0"."""
    env = {
        **os.environ,
        "AUDITCORE_EVENT_STORE": pg_settings.event_store,
        "AUDITCORE_CLICKHOUSE": process_clickhouse_url,
        "COLUMNS": "200",
    }

    def run(*args: str) -> str:
        done = subprocess.run(
            [AUDITCORE, *args], capture_output=True, text=True, env=env, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    run("workspaces", "create", "acme")
    run("project")
    out = tmp_path / "report.html"
    shown = run("report", "-w", "acme", "--since", "1h", "--out", str(out))
    assert "0/0" not in shown
    assert "Report written" in shown
    assert "auditcore.workspace.created" in out.read_text()


def test_a_period_of_centuries_charts_every_day_in_at_most_750_bars(
    pg_settings: Settings,
) -> None:
    """From 1900 on, days are taken together (the heading says how many): every event is in
    one bar, every stretch of days has its bar, and the file stays small."""
    now = datetime.now(UTC)
    moments = [datetime(1901, 3, 1, tzinfo=UTC), datetime(1999, 12, 31, 23, tzinfo=UTC), now]
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        audit.record_many(
            {"action": "note.added", "workspace_id": "acme", "actor": {"id": "u"},
             "occurred_at": moment}
            for moment in moments
        )  # fmt: skip
        audit.project()
        report = build_report(audit.reader("acme"), datetime(1, 1, 1, tzinfo=UTC), now, now=now)
    assert report.activity.interval == "day"
    html = render_report(report)
    titles = re.findall(r'<g class="bucket"><title>[^<]* UTC: (\d+) events</title>', html)
    days = (report.until - report.since).days
    per_bar = -(-days // 750)
    assert f"Activity per {per_bar} days" in html
    assert len(titles) == -(-days // per_bar) <= 750
    assert sorted(int(count) for count in titles if count != "0") == [1, 1, 1]
    assert len(html) < 200_000


def test_a_batch_cut_off_mid_insert_counts_nowhere_until_it_is_finished(
    pg_settings: Settings,
) -> None:
    """A projector killed between the partitions of one insert leaves part of a batch in the
    table: beyond the tracked position, so no figure counts it; once resumed, all do."""
    from auditcore.projection.processor import Processor  # noqa: PLC0415
    from tests.interrupted import DiesMidInsert, SimulatedKillError  # noqa: PLC0415

    since, until = datetime(1989, 1, 1, tzinfo=UTC), datetime(2001, 1, 1, tzinfo=UTC)
    with AuditCore(pg_settings, registry=registry_with_notes()) as audit:
        audit.record_many(
            {"action": "note.added", "workspace_id": "acme", "source": f"s{year % 3}",
             "actor": {"id": f"user_{year}"}, "occurred_at": datetime(year, 3, 1, tzinfo=UTC)}
            for year in range(1990, 2000)
        )  # fmt: skip
        audit.migrate()
        model, target = audit.read_models.get("audit_events"), audit.settings.clickhouse_target
        dying = DiesMidInsert(
            model, audit.app, target, client=audit.clickhouse,
            unwritten={str(year) for year in range(1991, 2000)},
        )  # fmt: skip
        with contextlib.suppress(SimulatedKillError):
            dying.step()
        assert audit.clickhouse.query("SELECT count() FROM audit_events").result_rows == [(1,)]
        reader = audit.reader("acme")
        cut = build_report(reader, since, until, now=until, detail_limit=100)
        assert cut.position == 0
        assert (cut.total, cut.actors, cut.sources, cut.events) == (0, 0, [], [])
        assert cut.activity.buckets == []

        Processor(model, audit.app, target, client=audit.clickhouse).resume()
        done = build_report(reader, since, until, now=until, detail_limit=100)
    assert done.position == 10
    assert done.total == done.actors == len(done.events) == 10
    _agrees_with_itself(done)


def test_reports_between_sigkills_of_a_projector_count_the_store_up_to_their_snapshot(
    postgres_database: str, process_clickhouse_url: str
) -> None:
    """A projector SIGKILLed at random instants (batches span many yearly partitions, so a
    kill can leave part of one written): a report taken after each kill counts exactly the
    workspace's events the store holds up to its snapshot, in every figure."""
    settings = Settings(fresh_postgres_store(postgres_database), process_clickhouse_url)
    rng = random.Random(29)
    with AuditCore(settings) as audit:
        for _ in range(6):
            audit.record_many(
                {
                    "action": "incident.comment_added",
                    "workspace_id": rng.choice(("acme", "acme", "globex")),
                    "actor": {"id": f"user_{rng.randrange(13)}"},
                    "source": rng.choice(SOURCES),
                    "metadata": {"body": "looked"},
                    "occurred_at": datetime(rng.randrange(1901, 2026), 1 + rng.randrange(12), 1,
                                            tzinfo=UTC),
                }
                for _ in range(60)
            )  # fmt: skip
    positions = []
    for _ in range(KILLS):
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.projection_worker", "project-to-be-killed",
             settings.event_store, settings.clickhouse],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )  # fmt: skip
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "projecting", process.communicate()[1]
        time.sleep(rng.uniform(0.5, 8.0))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        figures = _report_in_a_process(settings)
        positions.append(figures["position"])
        assert figures["total"] == figures["store"], figures
        for name in ("chart", "actions", "table"):
            assert figures[name] == figures["total"], (name, figures)
        assert figures["listed_sources"] == figures["table_sources"], figures
        assert figures["actors"] == figures["table_actors"], figures
    assert len(set(positions)) > 1, "every kill landed at the same position"


def _report_in_a_process(settings: Settings) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.report_worker", settings.event_store, settings.clickhouse,
         "acme"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures
