"""The read-model registry: the single source of truth for what the read side holds.

Each file under ``projections/`` declares one read model and registers it here; importing
the ``projections`` package's modules is what fills the registry.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterator
from typing import TypeVar

from auditcore.errors import NotFoundError
from auditcore.readmodel.model import ReadModel

M = TypeVar("M", bound=ReadModel)

_declared: dict[str, ReadModel] = {}


class UnknownReadModelError(NotFoundError):
    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no read model named {name!r}; known read models: {', '.join(known)}")


def register(model: M) -> M:
    """Declare a read model (called once, at import, by its file under ``projections/``)."""
    existing = _declared.get(model.name)
    if existing is not None and existing.fingerprint() != model.fingerprint():
        raise ValueError(f"two different read models are both named {model.name!r}")
    _declared[model.name] = model
    return model


class ReadModelRegistry:
    """The read models in force, by name, in a stable order."""

    def __init__(self, models: list[ReadModel]) -> None:
        self._models = {model.name: model for model in sorted(models, key=lambda m: m.name)}

    def __iter__(self) -> Iterator[ReadModel]:
        return iter(self._models.values())

    def get(self, name: str) -> ReadModel:
        try:
            return self._models[name]
        except KeyError:
            raise UnknownReadModelError(name, list(self._models)) from None

    def only(self, names: list[str] | None) -> ReadModelRegistry:
        return self if not names else ReadModelRegistry([self.get(name) for name in names])


def load_read_models(package: str = "projections") -> ReadModelRegistry:
    """Import every module of ``package`` so each registers its read model."""
    root = importlib.import_module(package)
    for module in pkgutil.iter_modules(root.__path__):
        importlib.import_module(f"{package}.{module.name}")
    return ReadModelRegistry(list(_declared.values()))
