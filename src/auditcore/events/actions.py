"""The actions registry: every action's metadata schema, its version and its upcasters.

Actions come from Python (a pydantic model per action, registered in the process) or from data:
a JSON Schema registered in the control database (``SchemaCatalog``, consulted per workspace
for names Python does not know). Undeclared metadata keys are refused for every action unless
it opts in (``extra_keys=True``, a model configured ``extra="allow"``, or a JSON Schema's
``additionalProperties``).
"""

from __future__ import annotations

import difflib
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, JsonValue, ValidationError

from auditcore.errors import InvalidEventError, UnknownActionError
from auditcore.events.display import check_template, render
from auditcore.events.envelope import ACTION_MAX_LENGTH, ACTION_PATTERN, PATTERN_RULES
from auditcore.events.limits import EventLimits, MetadataLimits, default_max_future

if TYPE_CHECKING:
    from auditcore.events.json_schemas import JsonSchemaCheck

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns metadata of schema version ``n`` into metadata of version ``n + 1``."""


class FreeformMetadata(BaseModel):
    """Metadata for actions without a schema of their own: flat scalar values only."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, str | int | float | bool | None]


class SchemaMetadata(BaseModel):
    """The metadata of an action registered as JSON Schema: any JSON object (the schema itself
    is checked by ``ActionSpec.check``)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, JsonValue]


def strict_model(schema: type[BaseModel], extra_keys: bool) -> type[BaseModel]:
    """The model metadata is validated with: ``schema`` itself when it already decides about
    undeclared keys (``extra="forbid"`` refuses them, ``extra="allow"`` opts in), else a
    subclass that refuses them (pydantic's default would drop them in silence), or allows
    them when the action opts in with ``extra_keys``."""
    extra = schema.model_config.get("extra")
    wanted = "allow" if extra_keys else "forbid"
    if extra == wanted or (extra == "allow" and not extra_keys):
        return schema
    config = ConfigDict(**{**schema.model_config, "extra": wanted})  # type: ignore[typeddict-item]
    return type(
        schema.__name__, (schema,), {"model_config": config, "__module__": schema.__module__}
    )


@dataclass(frozen=True)
class ActionSpec:
    """One registered action: its name, metadata schema and schema version.

    ``json_schema``: the action was registered as data (``schema`` is then ``SchemaMetadata``
    and ``check`` validates against the JSON Schema); ``workspace_id`` is the workspace it was
    registered for (None: every workspace)."""

    name: str
    schema: type[BaseModel]
    version: int = 1
    description: str = ""
    upcasters: Mapping[int, Upcaster] = field(default_factory=dict)
    extra_keys: bool = False
    json_schema: Mapping[str, Any] | None = None
    workspace_id: str | None = None
    display_template: str = ""
    """How one of its events reads to a person (``auditcore.events.display``); "" for none.
    An action registered as JSON Schema carries it as the schema's ``x-display-template``."""
    model: type[BaseModel] = field(init=False, compare=False, repr=False)
    """What metadata is validated with (undeclared keys refused unless opted in)."""
    check: JsonSchemaCheck | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", strict_model(self.schema, self.extra_keys))
        check = None
        if self.json_schema is not None:
            # Imported here: jsonschema takes a tenth of a second to import, and only a process
            # that meets an action registered as data needs it.
            from auditcore.events.json_schemas import compile_schema  # noqa: PLC0415

            check = compile_schema(self.json_schema)
        object.__setattr__(self, "check", check)
        annotated = (self.json_schema or {}).get("x-display-template", "")
        if not isinstance(annotated, str):  # a bad registration: ValueError, as the rest
            raise ValueError(  # noqa: TRY004
                f"action {self.name!r}: the display template (x-display-template) must be a "
                f"string, not {type(annotated).__name__}"
            )
        check_template(self.template)
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

    @property
    def template(self) -> str:
        """The display template: declared, or the JSON Schema's ``x-display-template``."""
        if self.display_template:
            return self.display_template
        annotated = (self.json_schema or {}).get("x-display-template")
        return annotated if isinstance(annotated, str) else ""

    def dump(self, metadata: BaseModel) -> dict[str, JsonValue]:
        """Validated metadata as stored, keys sorted: a model's null fields are left out (an
        optional field omitted and one given as None store the same); JSON Schema metadata is
        kept as given (its schema may tell null from absent)."""
        dumped = metadata.model_dump(mode="json", exclude_none=self.json_schema is None)
        return sorted_keys(dumped)  # type: ignore[no-any-return]

    def problems(self, metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
        """What the JSON Schema (if any) finds wrong with dumped metadata."""
        return [] if self.check is None else self.check.problems(metadata)


class SchemaCatalog(ABC):
    """Actions registered as data (JSON Schema), kept outside this process."""

    @abstractmethod
    def find(self, workspace_id: str | None, name: str, version: int | None) -> ActionSpec | None:
        """The workspace's own registration of ``name`` if it has one, else the one for every
        workspace; its ``version`` (None: the newest); None if there is none."""

    @abstractmethod
    def names(self, workspace_id: str | None) -> list[str]:
        """Every action name registered for the workspace (and for every workspace)."""

    def close(self) -> None:  # noqa: B027 - most catalogs hold nothing to release
        """Release connections."""


class LazyCatalog(SchemaCatalog):
    """A catalog opened on first use (opening one imports the database driver, which a
    process that records only Python actions never needs)."""

    def __init__(self, open_catalog: Callable[[], SchemaCatalog]) -> None:
        self._open = open_catalog
        self._catalog: SchemaCatalog | None = None

    @property
    def opened(self) -> SchemaCatalog:
        if self._catalog is None:
            self._catalog = self._open()
        return self._catalog

    def find(self, workspace_id: str | None, name: str, version: int | None) -> ActionSpec | None:
        return self.opened.find(workspace_id, name, version)

    def names(self, workspace_id: str | None) -> list[str]:
        return self.opened.names(workspace_id)

    def close(self) -> None:
        if self._catalog is not None:
            self._catalog.close()


class ActionRegistry:
    """Maps action names to their specs; the single source of truth for what may be recorded."""

    def __init__(
        self,
        specs: Mapping[str, ActionSpec] | None = None,
        limits: MetadataLimits | None = None,
        *,
        max_future: timedelta | None = None,
        event_limits: EventLimits | None = None,
        catalog: SchemaCatalog | None = None,
    ) -> None:
        self._specs: dict[str, ActionSpec] = dict(specs or {})
        self.catalog = catalog
        """Actions registered as data, consulted for names Python does not know."""
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
        extra_keys: bool = False,
        display_template: str = "",
    ) -> ActionSpec:
        """Register an action; ``extra_keys=True`` lets metadata carry keys ``schema`` does not
        declare (they are refused otherwise, naming the key); ``display_template`` is how its
        events read to a person, e.g. ``{actor.name} resolved {targets[0].name}``."""
        spec = ActionSpec(
            name,
            schema,
            version,
            description,
            dict(upcasters or {}),
            extra_keys,
            display_template=display_template,
        )
        existing = self._specs.get(name)
        if existing is not None and existing != spec and not replace:
            raise ValueError(
                f"action {name!r} is already registered with a different spec; "
                "pass replace=True to supersede it (e.g. when bumping its schema version)"
            )
        self._specs[name] = spec
        return spec

    def spec(
        self, name: str, workspace_id: str | None = None, version: int | None = None
    ) -> ActionSpec:
        """The action's spec: registered in Python, else in the catalog for ``workspace_id``
        (its own registration first, then the one for every workspace). ``version`` asks for
        that schema version (None: the newest)."""
        if not isinstance(name, str):
            raise InvalidEventError(
                str(name),
                [("action", f"expected a string such as 'incident.resolved', got {name!r}")],
            )
        spec = self._specs.get(name)
        if spec is None and self.catalog is not None:
            spec = self.catalog.find(workspace_id, name, version)
            if spec is None and version is not None:
                spec = self.catalog.find(workspace_id, name, None)
        if spec is None:
            known = list(self._specs)
            if self.catalog is not None:
                known += self.catalog.names(workspace_id)
            suggestions = difflib.get_close_matches(name, known, n=2, cutoff=0.7)
            raise UnknownActionError(name, suggestions)
        if version is not None and version != spec.version:
            raise InvalidEventError(
                name,
                [
                    (
                        "version",
                        f"{name!r} has no schema version {version!r}; its newest is {spec.version}",
                    )
                ],
            )
        return spec

    def describe(self, event: Mapping[str, Any]) -> str:
        """``event``'s (its JSON) description from its action's template; "" without one."""
        try:
            spec = self.spec(str(event.get("action")), event.get("workspace_id"))
        except InvalidEventError:
            return ""
        return render(spec.template, event) if spec.template else ""

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
            catalog=self.catalog,
        )

    def with_catalog(self, catalog: SchemaCatalog) -> ActionRegistry:
        """This registry, also consulting ``catalog``: the same Python actions (registering in
        either registers in both) and limits."""
        bound = ActionRegistry(
            limits=self.limits,
            max_future=self._max_future,
            event_limits=self.event_limits,
            catalog=catalog,
        )
        bound._specs = self._specs  # shared: Python registrations stay visible to both
        return bound

    def validate_metadata(
        self,
        name: str,
        metadata: BaseModel | Mapping[str, Any] | None,
        workspace_id: str | None = None,
        version: int | None = None,
    ) -> tuple[int, dict[str, JsonValue]]:
        """Validate metadata for a new event; return (schema version, JSON-ready metadata).

        Checks the action's schema first (for ``workspace_id``; ``version``: that schema
        version, else the newest), then the registry's size limits. Keys the schema does not
        declare are refused unless the action opts in. A model's null values are omitted, so
        an optional field left out and one given as None store the same.
        """
        spec = self.spec(name, workspace_id, version)
        if isinstance(metadata, BaseModel) and not isinstance(metadata, spec.schema):
            raise InvalidEventError(
                name,
                [("metadata", f"expected {spec.schema.__name__}, got {type(metadata).__name__}")],
            )
        raw = metadata.model_dump(mode="json") if isinstance(metadata, BaseModel) else metadata
        try:
            model = spec.model.model_validate({} if raw is None else raw)
        except ValidationError as error:
            raise InvalidEventError(name, located_problems("metadata", error)) from None
        clean = spec.dump(model)
        problems = spec.problems(clean) + self.limits.check(clean)
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
        if detail["type"] == "extra_forbidden" and location.startswith("metadata."):
            message = "undeclared key: the action's schema does not declare it"
        rule = PATTERN_RULES.get(detail.get("ctx", {}).get("pattern", ""))
        if detail["type"] == "string_pattern_mismatch" and rule:
            message = f"{detail['input']!r} is not valid: {rule}"
        elif detail["type"] == "tuple_type":  # the envelope's lists are tuples: frozen
            message = f"Input should be a list, not {type(detail['input']).__name__}"
        problems.append((location, message))
    return problems


default_registry = ActionRegistry()
"""The process-wide registry that the built-in aggregates register their actions in."""
