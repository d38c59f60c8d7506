"""The HTTP API and the web viewer.

Names are imported on first use: the command line imports ``auditcore.api.*`` modules
without FastAPI unless it serves."""

from __future__ import annotations

from typing import TYPE_CHECKING

from auditcore.lazy import lazy_attributes

if TYPE_CHECKING:
    from auditcore.api.app import create_app
    from auditcore.api.config import ApiConfig

_WHERE = {"create_app": "auditcore.api.app", "ApiConfig": "auditcore.api.config"}


__getattr__ = lazy_attributes(__name__, globals(), _WHERE)


__all__ = ["ApiConfig", "create_app"]
