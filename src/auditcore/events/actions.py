"""The actions registry: every action's metadata schema, its version and its upcasters."""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from auditcore.errors import InvalidEventError, UnknownActionError
from auditcore.events.envelope import ACTION_MAX_LENGTH, ACTION_PATTERN, PATTERN_RULES
from auditcore.events.limits import EventLimits, MetadataLimits, default_max_future

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns metadata of schema version ``n`` into metadata of version ``n + 1``."""


class FreeformMetadata(BaseModel):
    """Metadata for actions without a schema of their own: flat scalar values only."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, str | int | float | bool | None]


@dataclass(frozen=True)
class ActionSpec:
    """One registered action: its name, metadata schema and schema version."""

    name: str
    schema: type[BaseModel]
    version: int = 1
    description: str = ""
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not re.fullmatch(ACTION_PATTERN, self.name):
            raise ValueError(
                f"action name {self.name!r} must be dotted lowercase words, "
                "e.g. 'incident.resolved'"
            )
        if len(self.name) > ACTION_MAX_LENGTH:
            raise ValueError(
                f"action name {self.name[:40]!r}… is {len(self.name)} characters long; "
                f"events hold at most {ACTION_MAX_LENGTH}"
            )
        if self.version < 1:
            raise ValueError(f"action {self.name!r}: schema version must be >= 1")
        missing = [v for v in range(1, self.version) if v not in self.upcasters]
        if missing:
            raise ValueError(
                f"action {self.name!r} is at schema version {self.version} but has no upcaster "
                f"from version(s) {missing}; pass upcasters={{n: fn}} converting n to n + 1"
            )


class ActionRegistry:
    """Maps action names to their specs; the single source of truth for what may be recorded."""

    def __init__(
        self,
        specs: Mapping[str, ActionSpec] | None = None,
        limits: MetadataLimits | None = None,
        *,
        max_future: timedelta | None = None,
        event_limits: EventLimits | None = None,
    ) -> None:
        self._specs: dict[str, ActionSpec] = dict(specs or {})
        self.limits = limits or MetadataLimits()
        self.event_limits = event_limits or EventLimits()
        """Targets (count, bytes) and the whole event's size."""
        self._max_future = max_future

    @property
    def max_future(self) -> timedelta:
        """How far ahead of this clock a new event may say it occurred (clock skew): as given,
        else ``AUDITCORE_MAX_FUTURE_SECONDS``, else 5 minutes. Read when first needed, so a
        bad setting is reported by the first record, not by ``import auditcore``."""
        if self._max_future is None:
            self._max_future = default_max_future()
        return self._max_future

    def register(
        self,
        name: str,
        schema: type[BaseModel] = FreeformMetadata,
        *,
        version: int = 1,
        description: str = "",
        upcasters: Mapping[int, Upcaster] | None = None,
        replace: bool = False,
    ) -> ActionSpec:
        spec = ActionSpec(name, schema, version, description, dict(upcasters or {}))
        existing = self._specs.get(name)
        if existing is not None and existing != spec and not replace:
            raise ValueError(
                f"action {name!r} is already registered with a different spec; "
                "pass replace=True to supersede it (e.g. when bumping its schema version)"
            )
        self._specs[name] = spec
        return spec

    def spec(self, name: str) -> ActionSpec:
        if not isinstance(name, str):
            raise InvalidEventError(
                str(name),
                [("action", f"expected a string such as 'incident.resolved', got {name!r}")],
            )
        try:
            return self._specs[name]
        except KeyError:
            suggestions = difflib.get_close_matches(name, self._specs, n=2, cutoff=0.7)
            raise UnknownActionError(name, suggestions) from None

    def __iter__(self) -> Iterator[ActionSpec]:
        return iter(sorted(self._specs.values(), key=lambda spec: spec.name))

    def upcasting_actions(self) -> frozenset[str]:
        """Actions whose stored events may need upcasting (schema version above 1)."""
        return frozenset(name for name, spec in self._specs.items() if spec.version > 1)

    def copy(
        self,
        limits: MetadataLimits | None = None,
        *,
        max_future: timedelta | None = None,
        event_limits: EventLimits | None = None,
    ) -> ActionRegistry:
        return ActionRegistry(
            self._specs,
            limits or self.limits,
            max_future=self._max_future if max_future is None else max_future,
            event_limits=event_limits or self.event_limits,
        )

    def validate_metadata(
        self, name: str, metadata: BaseModel | Mapping[str, Any] | None
    ) -> tuple[int, dict[str, JsonValue]]:
        """Validate metadata for a new event; return (schema version, JSON-ready metadata).

        Checks the action's schema first, then the registry's size limits. Null values are
        omitted, so an optional field left out and one given as None store the same.
        """
        spec = self.spec(name)
        if isinstance(metadata, BaseModel) and not isinstance(metadata, spec.schema):
            raise InvalidEventError(
                name,
                [("metadata", f"expected {spec.schema.__name__}, got {type(metadata).__name__}")],
            )
        raw = metadata.model_dump(mode="json") if isinstance(metadata, BaseModel) else metadata
        try:
            model = spec.schema.model_validate({} if raw is None else raw)
        except ValidationError as error:
            raise InvalidEventError(name, located_problems("metadata", error)) from None
        clean = sorted_keys(model.model_dump(mode="json", exclude_none=True))
        problems = self.limits.check(clean)
        if problems:
            raise InvalidEventError(name, problems)
        return spec.version, clean

    def upcast(
        self, name: str, schema_version: int, metadata: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        """Bring stored metadata up to the registered schema version.

        History must always stay readable, so actions this process does not know, or versions
        newer than it knows, are returned as stored.
        """
        spec = self._specs.get(name)
        if spec is None:
            return schema_version, metadata
        while schema_version < spec.version:
            metadata = spec.upcasters[schema_version](metadata)
            schema_version += 1
        return schema_version, metadata


def sorted_keys(value: Any) -> Any:
    """The same JSON value with every object's keys in sorted order (deterministic bytes)."""
    if isinstance(value, dict):
        return {key: sorted_keys(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sorted_keys(item) for item in value]
    return value


def located_problems(prefix: str, error: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic errors into (dotted location, message) pairs."""
    problems = []
    for detail in error.errors(include_url=False):
        location = prefix
        for part in detail["loc"]:
            location += f"[{part}]" if isinstance(part, int) else f".{part}"
        message = detail["msg"].removeprefix("Value error, ")
        rule = PATTERN_RULES.get(detail.get("ctx", {}).get("pattern", ""))
        if detail["type"] == "string_pattern_mismatch" and rule:
            message = f"{detail['input']!r} is not valid: {rule}"
        elif detail["type"] == "tuple_type":  # the envelope's lists are tuples: frozen
            message = f"Input should be a list, not {type(detail['input']).__name__}"
        problems.append((location, message))
    return problems


default_registry = ActionRegistry()
"""The process-wide registry that the built-in aggregates register their actions in."""
