"""The HTTP API and the web viewer.

Names are imported on first use: the command line imports ``auditcore.api.*`` modules
without FastAPI unless it serves."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from auditcore.api.app import create_app
    from auditcore.api.config import ApiConfig

_WHERE = {"create_app": "auditcore.api.app", "ApiConfig": "auditcore.api.config"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


__all__ = ["ApiConfig", "create_app"]
