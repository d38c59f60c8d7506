"""Audit reports: one workspace and period, summarised from the read model, as HTML."""

from auditcore.report.data import ReportData, build_report
from auditcore.report.generate import generate_report
from auditcore.report.render import render_report

__all__ = ["ReportData", "build_report", "generate_report", "render_report"]
