"""Package names imported on first use (PEP 562), so that importing a package does not import
what only some of its users need (the command line starts in a fraction of the time)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


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


class LazyRegistry(Mapping[str, T]):
    """A registry whose entries are imported when first looked up: the names are known up
    front (for listings and error messages), the modules behind them (some pull in client
    libraries of their own) load only when an entry is used."""

    def __init__(self, where: Mapping[str, str]) -> None:
        """``where`` maps each name to ``"module:attribute"``."""
        self._where = dict(where)
        self._loaded: dict[str, T] = {}

    def __getitem__(self, name: str) -> T:
        if name not in self._loaded:
            module, _, attribute = self._where[name].partition(":")
            self._loaded[name] = getattr(importlib.import_module(module), attribute)
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)
