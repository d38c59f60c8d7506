"""Package names imported on first use (PEP 562), so that importing a package does not import
what only some of its users need (the command line starts in a fraction of the time)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, namespace: dict[str, Any], where: Mapping[str, str]
) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports each name in ``where`` from its
    module on first use and keeps it in ``namespace`` (the package's globals)."""

    def attribute(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        namespace[name] = value
        return value

    return attribute
