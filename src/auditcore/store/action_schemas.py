"""Actions registered as data: each action's JSON Schema, versioned, in the control database,
so every process of an installation (the CLI's ``record`` and ``import``, ``serve``,
dispatchers) validates with the same schemas, without Python.

A registration is for one workspace (what an ``admin`` API key registers: it never affects
another workspace) or for every workspace (``workspace_id`` NULL: the operator at the command
line). A workspace's own registration of a name wins over the one for every workspace. Schema
versions of a name are 1, 2, 3… in each scope, and immutable: registering the same schema again
is a no-op returning its version, and a different schema becomes the next version (events keep
the version they were validated against).

Each process keeps a snapshot of the table and reads it again every ``refresh`` seconds, and at
once (at most once per ``miss_interval``) when asked for a name it does not hold, so a
registration is seen by a running process on its next event of that action, and a new version
within ``refresh`` seconds.

Failure semantics: a control database that cannot be reached raises the database's error to
the caller (the event is not recorded; nothing is validated against a guessed schema). Two
processes registering a name at the same moment: one wins each version, the other's insert
fails on the primary key and is retried as the next version (or found identical). A stored
schema that no longer compiles makes only its own action (in its own scope) unknown, logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Column, Engine, Integer, MetaData, String, Table, Text, insert, select
from sqlalchemy.exc import IntegrityError

from auditcore.events.actions import ActionSpec, SchemaCatalog, SchemaMetadata
from auditcore.events.json_schemas import SchemaError
from auditcore.events.reserved import is_reserved
from auditcore.store.control import UtcDateTime, control_engine, create_tables
from auditcore.store.settings import Settings

logger = logging.getLogger(__name__)

EVERY_WORKSPACE = ""
"""The ``workspace_id`` column's value for a registration that holds in every workspace."""

metadata = MetaData()
action_schemas = Table(
    "auditcore_action_schemas",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("name", String(100), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("schema", Text, nullable=False),  # canonical JSON (sorted keys)
    Column("description", String(500), nullable=False),
    Column("registered_at", UtcDateTime, nullable=False),
    Column("registered_by", String(256), nullable=False),
)


@dataclass(frozen=True)
class Registered:
    """One registered schema version."""

    name: str
    version: int
    workspace_id: str | None
    schema: dict[str, Any]
    description: str
    registered_at: datetime
    registered_by: str
    created: bool = False
    """False when the same schema was already registered (nothing was stored)."""


class ActionCatalog(SchemaCatalog):
    """The control database's action schemas, with a per-process snapshot."""

    def __init__(
        self,
        settings: Settings,
        refresh: float = 5.0,
        miss_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._engine: Engine | None = None
        self._refresh = refresh
        self._miss_interval = miss_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._loaded_at: float | None = None
        self._snapshot: dict[tuple[str, str], dict[int, ActionSpec]] = {}

    def find(self, workspace_id: str | None, name: str, version: int | None) -> ActionSpec | None:
        versions = self._versions(workspace_id, name)
        if versions is None and self._stale(miss=True):
            self._load()
            versions = self._versions(workspace_id, name)
        if not versions:
            return None
        return versions.get(max(versions) if version is None else version)

    def names(self, workspace_id: str | None) -> list[str]:
        if self._stale(miss=False):
            self._load()
        scopes = {EVERY_WORKSPACE, workspace_id or EVERY_WORKSPACE}
        return sorted({name for scope, name in self._snapshot if scope in scopes})

    def listing(self, workspace_id: str | None) -> list[Registered]:
        """Every version registered for the workspace and for every workspace, read now."""
        scopes = [EVERY_WORKSPACE] + ([workspace_id] if workspace_id else [])
        query = (
            select(action_schemas)
            .where(action_schemas.c.workspace_id.in_(scopes))
            .order_by(
                action_schemas.c.name, action_schemas.c.workspace_id, action_schemas.c.version
            )
        )
        with self._connected().connect() as connection:
            return [_registered(row) for row in connection.execute(query).mappings()]

    def register(
        self,
        name: str,
        schema: Any,
        *,
        workspace_id: str | None,
        version: int | None = None,
        description: str = "",
        registered_by: str,
        python_actions: frozenset[str] = frozenset(),
    ) -> Registered:
        """Store ``schema`` as the next version of ``name`` (or ``version``, which must be the
        next one or an identical existing one). Raises ``ValueError`` saying what is wrong.

        ``python_actions``: names registered in Python, which a schema cannot shadow."""
        if is_reserved(name):
            raise ValueError(f"action {name!r}: 'auditcore.*' actions are auditcore's own")
        if name in python_actions:
            raise ValueError(
                f"action {name!r} is registered in Python (built in or by --actions); "
                "its schema cannot be replaced by data"
            )
        # Checks the name (pattern, length), the version and the schema (SchemaError).
        ActionSpec(name, SchemaMetadata, json_schema=schema)
        if version is not None and version < 1:
            raise ValueError(f"action {name!r}: schema version must be >= 1")
        if len(description) > 500:
            raise ValueError("description: at most 500 characters")
        canonical = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode()
        scope = workspace_id or EVERY_WORKSPACE
        for _attempt in range(5):
            existing = self._stored_versions(scope, name)
            newest = max(existing, default=0)
            if version is None and newest and existing[newest] == canonical:
                return self._row(scope, name, newest)
            if version is not None and version in existing:
                if existing[version] == canonical:
                    return self._row(scope, name, version)
                raise ValueError(
                    f"action {name!r} already has a different schema version {version}; "
                    "schema versions are immutable: register it as version "
                    f"{max(existing) + 1}"
                )
            following = newest + 1
            if version is not None and version != following:
                raise ValueError(
                    f"action {name!r}: the next schema version is {following}, not {version}"
                )
            row = {
                "workspace_id": scope,
                "name": name,
                "version": following,
                "schema": canonical,
                "description": description,
                "registered_at": datetime.now(UTC),
                "registered_by": registered_by[:256],
            }
            try:
                with self._connected().begin() as connection:
                    connection.execute(insert(action_schemas).values(row))
            except IntegrityError:
                continue  # another process took this version meanwhile: look again
            with self._lock:
                self._loaded_at = None  # this process sees it at once
            return _registered(row, created=True)
        raise ValueError(f"action {name!r}: too many concurrent registrations; try again")

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def _versions(self, workspace_id: str | None, name: str) -> dict[int, ActionSpec] | None:
        if self._stale(miss=False):
            self._load()
        if workspace_id:
            own = self._snapshot.get((workspace_id, name))
            if own:
                return own
        return self._snapshot.get((EVERY_WORKSPACE, name))

    def _stale(self, *, miss: bool) -> bool:
        if self._loaded_at is None:
            return True
        age = self._clock() - self._loaded_at
        return age >= (self._miss_interval if miss else self._refresh)

    def _load(self) -> None:
        with self._connected().connect() as connection:
            rows = list(connection.execute(select(action_schemas)).mappings())
        with self._lock:
            previous = self._snapshot
            snapshot: dict[tuple[str, str], dict[int, ActionSpec]] = {}
            broken: set[tuple[str, str]] = set()
            for row in rows:
                key = (row["workspace_id"], row["name"])
                known = previous.get(key, {}).get(row["version"])
                try:
                    # Specs are kept across loads: each holds its compiled schema and the
                    # dispatcher caches a model per spec object.
                    snapshot.setdefault(key, {})[row["version"]] = known or _spec(row)
                except (SchemaError, orjson.JSONDecodeError) as error:
                    # A row that no longer compiles (edited behind our back, or stored by an
                    # older release) takes out its own action in its own scope, never every
                    # workspace's: that action is then "not registered" until fixed.
                    logger.warning("action schema %s v%s unusable: %s", key, row["version"], error)
                    broken.add(key)
            for key in broken:
                snapshot.pop(key, None)
            self._snapshot = snapshot
            self._loaded_at = self._clock()

    def _stored_versions(self, scope: str, name: str) -> dict[int, str]:
        query = select(action_schemas.c.version, action_schemas.c.schema).where(
            action_schemas.c.workspace_id == scope, action_schemas.c.name == name
        )
        with self._connected().connect() as connection:
            return {row.version: row.schema for row in connection.execute(query)}

    def _row(self, scope: str, name: str, version: int) -> Registered:
        query = select(action_schemas).where(
            action_schemas.c.workspace_id == scope,
            action_schemas.c.name == name,
            action_schemas.c.version == version,
        )
        with self._connected().connect() as connection:
            return _registered(connection.execute(query).mappings().one())

    def _connected(self) -> Engine:
        if self._engine is None:
            engine = control_engine(self._settings)
            create_tables(engine, metadata)
            self._engine = engine
        return self._engine


def _spec(row: Any) -> ActionSpec:
    return ActionSpec(
        row["name"],
        SchemaMetadata,
        row["version"],
        row["description"],
        # Older versions' events are returned as stored: JSON Schema actions have no upcasters.
        upcasters=dict.fromkeys(range(1, row["version"]), _as_stored),
        json_schema=orjson.loads(row["schema"]),
        workspace_id=row["workspace_id"] or None,
    )


def _as_stored(metadata: dict[str, Any]) -> dict[str, Any]:
    return metadata


def _registered(row: Any, created: bool = False) -> Registered:
    return Registered(
        name=row["name"],
        version=row["version"],
        workspace_id=row["workspace_id"] or None,
        schema=orjson.loads(row["schema"]),
        description=row["description"],
        registered_at=row["registered_at"],
        registered_by=row["registered_by"],
        created=created,
    )
