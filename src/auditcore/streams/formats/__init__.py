"""Every payload format a stream can send, by the name users configure."""

from __future__ import annotations

from auditcore.streams.base import PayloadFormat
from auditcore.streams.formats.envelope import EnvelopeFormat

FORMATS: dict[str, type[PayloadFormat]] = {cls.name: cls for cls in (EnvelopeFormat,)}
