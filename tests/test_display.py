"""Display templates: paths into the event's JSON only (nothing of Python reachable), missing
fields rendered as nothing, malformed templates refused at registration, hostile text kept
as text (escaped where it is shown: the report's HTML)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from auditcore.events.actions import ActionRegistry, ActionSpec, FreeformMetadata, SchemaMetadata
from auditcore.events.display import MAX_LENGTH, check_template, render
from auditcore.events.envelope import AuditEvent
from auditcore.readmodel.queries import Stats
from auditcore.report import ReportData
from auditcore.report.render import render_report

EVENT: dict[str, Any] = {
    "action": "incident.resolved",
    "workspace_id": "acme",
    "actor": {"id": "user_alice", "type": "user", "name": "Alice"},
    "targets": [{"type": "incident", "id": "i1", "name": "DB down"}],
    "metadata": {"resolution": "failover", "count": 3, "nested": {"a": [1, 2]}, "none": None},
}


def test_paths_reach_the_events_json_and_nothing_else() -> None:
    template = "{actor.name} resolved {targets[0].name}: {metadata.resolution}"
    assert render(template, EVENT) == "Alice resolved DB down: failover"
    assert render("{metadata.count} {metadata.nested} {{x}}", EVENT) == '3 {"a":[1,2]} {x}'
    # Missing fields, wrong types on the way, indexes out of range: nothing, never an error.
    for path in (
        "missing",
        "metadata.none",
        "metadata.nope.deeper",
        "targets[5].name",
        "targets.name",
        "actor[0]",
        "metadata.count.real",
    ):
        assert render(f"<{{{path}}}>", EVENT) == "<>", path
    # Python's attributes are not paths into JSON: str.format would have reached them.
    for path in ("__class__", "actor.__class__", "metadata.__init__", "action.upper"):
        assert render(f"{{{path}}}", EVENT) == "", path
    assert f"{EVENT.__class__}" != ""  # what str.format would have done


@pytest.mark.parametrize(
    "template",
    [
        "{0}",
        "{actor.name!r}",
        "{actor.name:>10}",
        "{actor..name}",
        "{targets[x]}",
        "{",
        "a}b",
        "{}",
    ],
)
def test_malformed_templates_are_refused_at_registration(template: str) -> None:
    with pytest.raises(ValueError, match="display template"):
        check_template(template)
    registry = ActionRegistry()
    with pytest.raises(ValueError, match="display template"):
        registry.register("thing.done", FreeformMetadata, display_template=template)


@pytest.mark.parametrize("template", [123, None, ["{actor.name}"], {"a": "b"}, True])
def test_a_json_schemas_template_that_is_not_text_is_refused(template: object) -> None:
    with pytest.raises(ValueError, match="display template"):
        ActionSpec("thing.done", SchemaMetadata, json_schema={"x-display-template": template})


def test_descriptions_are_bounded_and_hostile_text_stays_text() -> None:
    hostile = {**EVENT, "actor": {"id": "x", "type": "user", "name": "<img src=x onerror=1>"}}
    assert render("{actor.name}", hostile) == "<img src=x onerror=1>"
    huge = {**EVENT, "metadata": {"text": "é" * 5000}}
    described = render("{metadata.text}", huge)
    assert len(described) == MAX_LENGTH
    assert described.endswith("…")
    with pytest.raises(ValueError, match="at most"):
        check_template("x" * 501)


def test_registry_describes_events_by_their_actions_template() -> None:
    registry = ActionRegistry()
    registry.register("thing.done", FreeformMetadata, display_template="{actor.name} did it")
    assert registry.describe({**EVENT, "action": "thing.done"}) == "Alice did it"
    assert registry.describe({**EVENT, "action": "unknown.action"}) == ""
    registry.register("thing.quiet", FreeformMetadata)
    assert registry.describe({**EVENT, "action": "thing.quiet"}) == ""


def test_the_report_shows_descriptions_escaped() -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    event = AuditEvent.model_validate(
        {
            **EVENT,
            "event_id": str(uuid4()),
            "stream_id": str(uuid4()),
            "version": 1,
            "occurred_at": now.isoformat(),
            "recorded_at": now.isoformat(),
        }
    )
    report = ReportData(
        workspace_id="acme",
        since=now - timedelta(hours=1),
        until=now,
        generated_at=now,
        position=1,
        total=1,
        actors=1,
        activity=Stats("minute", "action", now - timedelta(hours=1), now, []),
        top_actions=[],
        top_actors=[],
        top_targets=[],
        sources=[],
        incidents=[],
        monitors=[],
        events=[event],
    )
    assert "<th>Description</th>" not in render_report(report)
    html = render_report(report, lambda event: "<b>bold</b> & co")
    assert "<th>Description</th>" in html
    assert "&lt;b&gt;bold&lt;/b&gt; &amp; co" in html
    assert "<b>bold</b>" not in html
