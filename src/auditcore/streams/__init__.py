"""Log streams: every event of a workspace delivered, at least once and in commit order, to a
destination outside auditcore (a SIEM, a webhook, a broker, files)."""
