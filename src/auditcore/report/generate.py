"""Generate a report and record that it was generated (who looked at what, and when)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from auditcore.events.envelope import Actor, RequestContext, Target
from auditcore.facade import AuditCore
from auditcore.report.data import build_report
from auditcore.report.render import render_report


def generate_report(
    audit: AuditCore,
    workspace_id: str,
    since: datetime,
    until: datetime,
    *,
    actor: Actor,
    source: str,
    context: RequestContext | None = None,
    entitlements: frozenset[str] | None = None,
    limits: Mapping[str, Any] | None = None,
) -> str:
    """The HTML report of one workspace's period; recorded as ``auditcore.report.generated``."""
    reader = audit.reader(workspace_id, entitlements=entitlements, limits=limits)
    data = build_report(reader, since, until, now=datetime.now(UTC))
    html = render_report(data, lambda event: audit.registry.describe(event.model_dump(mode="json")))
    audit.record_control_event(
        "auditcore.report.generated",
        workspace_id=workspace_id,
        metadata={
            "since": data.since.isoformat(),
            "until": data.until.isoformat(),
            "events": data.total,
        },
        actor=actor,
        source=source,
        targets=[Target(type="audit_log", id=workspace_id)],
        context=context or RequestContext(),
    )
    return html
