"""Every destination a stream can deliver to, by the kind users configure."""

from __future__ import annotations

from auditcore.streams.base import Destination
from auditcore.streams.destinations.webhook import WebhookDestination

DESTINATIONS: dict[str, type[Destination]] = {cls.kind: cls for cls in (WebhookDestination,)}
