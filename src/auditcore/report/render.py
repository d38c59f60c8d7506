"""The report as one self-contained HTML document (Jinja2; styles and chart inline)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from auditcore.events.envelope import AuditEvent
from auditcore.report.chart import activity_svg, bucket_name
from auditcore.report.data import ReportData

_environment = Environment(
    loader=PackageLoader("auditcore.report", "templates"),
    autoescape=select_autoescape(["html", "j2"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def duration(span: timedelta | None) -> str:
    """``1h 05m``, ``12m 30s``, or an em dash when there is none."""
    if span is None:
        return "—"
    seconds = int(span.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours >= 24:
        return f"{hours // 24}d {hours % 24:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s"


_environment.filters["duration"] = duration


def render_report(data: ReportData, describe: Callable[[AuditEvent], str] | None = None) -> str:
    """The report's HTML; ``describe`` gives each listed event's description (a column of
    its own when given; the template engine escapes it like every other value)."""
    template = _environment.get_template("report.html.j2")
    # The SVG is built by our own code with every label escaped.
    chart = Markup(activity_svg(data.activity))  # noqa: S704
    return template.render(
        report=data, chart=chart, bucket=bucket_name(data.activity), describe=describe
    )
