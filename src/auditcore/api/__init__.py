"""The HTTP API and the web viewer."""

from auditcore.api.app import create_app
from auditcore.api.config import ApiConfig

__all__ = ["ApiConfig", "create_app"]
