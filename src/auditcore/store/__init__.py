"""The write side: settings, the eventsourcing application, its mapper and recorders."""

from auditcore.store.application import AuditApplication
from auditcore.store.settings import EVENT_STORE_VARIABLE, Settings

__all__ = ["EVENT_STORE_VARIABLE", "AuditApplication", "Settings"]
