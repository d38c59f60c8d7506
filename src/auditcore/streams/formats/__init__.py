"""Every payload format a stream can send, by the name users configure."""

from __future__ import annotations

from auditcore.lazy import LazyRegistry
from auditcore.streams.base import PayloadFormat

FORMATS: LazyRegistry[type[PayloadFormat]] = LazyRegistry(
    {
        "envelope": "auditcore.streams.formats.envelope:EnvelopeFormat",
        "ocsf": "auditcore.streams.formats.ocsf:OcsfApiActivity",
    }
)
