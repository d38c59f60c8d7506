"""Log streams' configuration and progress: one row per stream in the control database (beside
workspaces, keys and retention policies).

A row holds the stream's workspace, name, destination kind and settings, payload format,
filters (the ``audit_events`` read model's filter vocabulary, as the API's query string takes
them), batching bounds, state (``active`` · ``paused`` · ``dead_letter``), its position in the
store's log (every event up to it was delivered or filtered out), the failed attempts of the
batch now due and the last error.

Credentials (the destination's ``secret_fields``) are kept apart from the other settings, in
``secrets``: encrypted with AES-256-GCM under the installation's current master key when one is
set (``AUDITCORE_MASTER_KEY_FILE`` / ``AUDITCORE_MASTER_KEY``; the row names the master key's
public id, and the stream's id is the associated data, so a blob cannot be moved to another
stream), otherwise as plain JSON protected only by the control database's own access control
(``streams add`` says so). They are opened only to build the running destination; everything
that shows a stream shows ``***`` in their place.

Failure semantics: the streamer moves the position with a compare-and-set on the position and
the row's ``generation`` (bumped by replay, resume and settings changes), so a position
committed by a streamer that did not see a replay is refused, never written over it. Database
errors reach the caller.
"""

from __future__ import annotations

import base64
import re
import secrets as random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ValidationError
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from auditcore.errors import AuditcoreError, ConfigurationError, InvalidQueryError, NotFoundError
from auditcore.lifecycle.master import MasterKeyError, MasterKeys
from auditcore.projection.log import LogReader
from auditcore.readmodel.model import ReadModel
from auditcore.readmodel.queries import live_matcher
from auditcore.store.control import UtcDateTime, control_engine, create_tables
from auditcore.store.settings import Settings
from auditcore.streams.base import Destination, PayloadFormat
from auditcore.streams.destinations import DESTINATIONS
from auditcore.streams.formats import FORMATS

if TYPE_CHECKING:
    from auditcore.facade import AuditCore

ACTIVE, PAUSED, DEAD_LETTER = "active", "paused", "dead_letter"
HIDDEN = "***"
_NONCE = 12

metadata = MetaData()
log_streams = Table(
    "auditcore_log_streams",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workspace_id", String(64), nullable=False, index=True),
    Column("name", String(100), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("settings", JSON, nullable=False),
    Column("secrets", Text, nullable=False),
    # The public id of the master key that encrypted ``secrets``; null: plain JSON.
    Column("secrets_key", String(32), nullable=True),
    Column("format", String(32), nullable=False),
    Column("filters", JSON, nullable=False),
    Column("max_events", Integer, nullable=False),
    Column("max_bytes", Integer, nullable=False),
    Column("max_wait", Float, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(2000), nullable=True),
    Column("delivered", BigInteger, nullable=False),
    Column("delivered_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("workspace_id", "name", name="auditcore_log_streams_name"),
)


class StreamConfigError(AuditcoreError, ValueError):
    """A stream's configuration is not valid (the message says which part)."""


class StreamExistsError(AuditcoreError):
    """The workspace already has a stream of that name."""


@dataclass(frozen=True)
class StreamSpec:
    """What ``streams add`` and ``POST /v1/streams`` take."""

    name: str
    kind: str
    settings: Mapping[str, Any]
    format: str = "envelope"
    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)
    max_events: int = 500
    max_bytes: int = 1_000_000
    max_wait: float = 1.0
    max_attempts: int = 8
    start: datetime | None = None
    """Deliver from the first event recorded at or after this moment; None: only events
    recorded from now on."""


@dataclass(frozen=True)
class StreamInfo:
    """A stream as shown (credentials replaced by ``***``)."""

    id: str
    workspace_id: str
    name: str
    kind: str
    settings: dict[str, Any]
    format: str
    filters: dict[str, list[str]]
    max_events: int
    max_bytes: int
    max_wait: float
    max_attempts: int
    state: str
    position: int
    generation: int
    attempts: int
    last_error: str | None
    delivered: int
    delivered_at: datetime | None
    created_at: datetime
    updated_at: datetime
    encrypted: bool
    """Whether the credentials are stored encrypted under a master key."""

    def public(self) -> dict[str, Any]:
        """What the API returns: the store's position is not shown (it reveals how many
        events other workspaces recorded)."""
        shown = {k: v for k, v in self.__dict__.items() if k not in ("position", "generation")}
        return shown


LIMITS = {
    "max_events": (1, 10_000),
    "max_bytes": (1_000, 50_000_000),
    "max_wait": (0.0, 300.0),
    "max_attempts": (1, 100),
}


class StreamConfigs:
    """The control database's stream rows. Thread-safe (SQLAlchemy's pool)."""

    def __init__(
        self,
        settings: Settings,
        audit_events: ReadModel,
        master_keys: MasterKeys | None = None,
        reader: Callable[[], LogReader] | None = None,
    ) -> None:
        self._settings = settings
        self._model = audit_events
        self._masters = master_keys if master_keys is not None else MasterKeys.from_env()
        self._reader = reader
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            engine = control_engine(self._settings)
            create_tables(engine, metadata)
            self._engine = engine
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    # Configuring.

    def add(self, workspace_id: str, spec: StreamSpec, head: int) -> StreamInfo:
        """Validate and store a new stream; ``head`` is the store's head now (where a stream
        without ``start`` begins)."""
        name = spec.name.strip()
        if not 0 < len(name) <= 100 or not name.isprintable():
            raise StreamConfigError("name: 1 to 100 printable characters")
        destination = DESTINATIONS.get(spec.kind)
        if destination is None:
            raise StreamConfigError(
                f"kind: {spec.kind!r} is not a destination; known: {', '.join(DESTINATIONS)}"
            )
        if spec.format not in FORMATS:
            raise StreamConfigError(
                f"format: {spec.format!r} is not a payload format; known: {', '.join(FORMATS)}"
            )
        validated = _validated(destination, spec.settings)
        filters = self.checked_filters(spec.filters)
        for name_, (low, high) in LIMITS.items():
            value = getattr(spec, name_)
            if not low <= value <= high:
                raise StreamConfigError(f"{name_}: between {low:g} and {high:g}")
        dumped = validated.model_dump(mode="json")
        plain = {k: v for k, v in dumped.items() if k not in destination.secret_fields}
        hidden = {k: v for k, v in dumped.items() if k in destination.secret_fields}
        _no_credentials_in_urls(plain)
        stream_id = "ls_" + random.token_hex(12)
        sealed, key_id = self._seal(stream_id, hidden)
        position = head if spec.start is None else self.position_before(spec.start)
        now = datetime.now(UTC)
        row = {
            "id": stream_id,
            "workspace_id": workspace_id,
            "name": name,
            "kind": spec.kind,
            "settings": plain,
            "secrets": sealed,
            "secrets_key": key_id,
            "format": spec.format,
            "filters": filters,
            "max_events": spec.max_events,
            "max_bytes": spec.max_bytes,
            "max_wait": spec.max_wait,
            "max_attempts": spec.max_attempts,
            "state": ACTIVE,
            "position": position,
            "generation": 0,
            "attempts": 0,
            "last_error": None,
            "delivered": 0,
            "delivered_at": None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            with self.engine.begin() as connection:
                connection.execute(insert(log_streams).values(row))
        except IntegrityError:
            raise StreamExistsError(
                f"workspace {workspace_id!r} already has a stream named {name!r}"
            ) from None
        return self.get(workspace_id, stream_id)

    def checked_filters(self, filters: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
        """Filters as the live tail takes them (same names, same value checks)."""
        if not isinstance(filters, Mapping):
            raise StreamConfigError("filters: an object of filter names to lists of values")
        checked: dict[str, list[str]] = {}
        for name, values in filters.items():
            listed = [values] if isinstance(values, str) else list(values)
            if not listed or not all(isinstance(v, str) for v in listed):
                raise StreamConfigError(f"filters.{name}: give one or more text values")
            checked[str(name)] = listed
        try:
            live_matcher(self._model, checked, None)
        except InvalidQueryError as error:
            raise StreamConfigError(f"filters.{error}") from None
        return checked

    def streams(self, workspace_id: str | None = None) -> list[StreamInfo]:
        query = select(log_streams).order_by(log_streams.c.workspace_id, log_streams.c.name)
        if workspace_id is not None:
            query = query.where(log_streams.c.workspace_id == workspace_id)
        with self.engine.connect() as connection:
            return [_info(dict(row._mapping)) for row in connection.execute(query)]

    def get(self, workspace_id: str | None, stream_id: str) -> StreamInfo:
        """The stream, if it belongs to ``workspace_id`` (None: any workspace, the CLI's
        operator); otherwise ``NotFoundError`` (another workspace's id reads as unknown)."""
        row = self._row(stream_id)
        if row is None or (workspace_id is not None and row["workspace_id"] != workspace_id):
            raise NotFoundError(f"no log stream {stream_id!r} in this workspace")
        return _info(row)

    def pause(self, workspace_id: str | None, stream_id: str) -> StreamInfo:
        info = self.get(workspace_id, stream_id)
        self._set(stream_id, state=PAUSED, generation=info.generation + 1)
        return self.get(workspace_id, stream_id)

    def resume(self, workspace_id: str | None, stream_id: str) -> StreamInfo:
        """Active again, from where it stopped (a dead-lettered batch is tried anew)."""
        info = self.get(workspace_id, stream_id)
        self._set(
            stream_id, state=ACTIVE, attempts=0, last_error=None, generation=info.generation + 1
        )
        return self.get(workspace_id, stream_id)

    def replay(self, workspace_id: str | None, stream_id: str, since: datetime) -> StreamInfo:
        """Active again, from the first event (in commit order) recorded at or after
        ``since``: everything from there is delivered again."""
        info = self.get(workspace_id, stream_id)
        position = self.position_before(since)
        self._set(
            stream_id,
            state=ACTIVE,
            attempts=0,
            last_error=None,
            position=position,
            generation=info.generation + 1,
        )
        return self.get(workspace_id, stream_id)

    def remove(self, workspace_id: str | None, stream_id: str) -> None:
        self.get(workspace_id, stream_id)
        with self.engine.begin() as connection:
            connection.execute(delete(log_streams).where(log_streams.c.id == stream_id))

    def position_before(self, since: datetime) -> int:
        """The position just before the first event (in commit order) recorded at or after
        ``since``; the head if there is none. Reads the log from its start: replays are rare,
        and the log keeps no index by time."""
        if self._reader is None:
            raise ConfigurationError("this stream store cannot read the log")
        reader = self._reader()
        position = 0
        while batch := reader.after(position, 5_000):
            for event in batch:
                recorded = orjson.loads(event.state).get("recorded_at")
                if recorded is not None and datetime.fromisoformat(recorded) >= since:
                    return event.position - 1
            position = batch[-1].position
        return position

    # What the streamer needs.

    def running(self, stream_id: str) -> StreamInfo | None:
        row = self._row(stream_id)
        return None if row is None else _info(row)

    def active_ids(self) -> list[str]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(log_streams.c.id).where(log_streams.c.state == ACTIVE))
            return [row[0] for row in rows]

    def destination(self, stream_id: str) -> Destination:
        """The stream's destination, credentials opened."""
        row = self._row(stream_id)
        if row is None:
            raise NotFoundError(f"no log stream {stream_id!r}")
        cls = DESTINATIONS[row["kind"]]
        hidden = self._open(stream_id, row["secrets"], row["secrets_key"])
        return cls(_validated(cls, {**row["settings"], **hidden}))

    def payload_format(self, info: StreamInfo) -> PayloadFormat:
        return FORMATS[info.format]()

    def commit(self, stream_id: str, generation: int, old: int, new: int, delivered: int) -> bool:
        """Move the position from ``old`` to ``new`` (False: a replay or resume changed the
        row meanwhile; nothing was written)."""
        values: dict[str, Any] = {"position": new, "attempts": 0, "last_error": None}
        if delivered:
            values |= {
                "delivered": log_streams.c.delivered + delivered,
                "delivered_at": datetime.now(UTC),
            }
        with self.engine.begin() as connection:
            moved = connection.execute(
                update(log_streams)
                .where(
                    log_streams.c.id == stream_id,
                    log_streams.c.generation == generation,
                    log_streams.c.position == old,
                )
                .values(values)
            )
            return moved.rowcount == 1

    def failed(
        self, stream_id: str, generation: int, attempts: int, error: str, *, dead: bool
    ) -> bool:
        """Record a failed attempt (and the dead-letter state); False if the row changed."""
        values: dict[str, Any] = {"attempts": attempts, "last_error": error[:2000]}
        if dead:
            values["state"] = DEAD_LETTER
        values["updated_at"] = datetime.now(UTC)
        with self.engine.begin() as connection:
            moved = connection.execute(
                update(log_streams)
                .where(log_streams.c.id == stream_id, log_streams.c.generation == generation)
                .values(values)
            )
            return moved.rowcount == 1

    # Internals.

    def _row(self, stream_id: str) -> Mapping[str, Any] | None:
        with self.engine.connect() as connection:
            row = connection.execute(
                select(log_streams).where(log_streams.c.id == stream_id)
            ).first()
        return None if row is None else dict(row._mapping)

    def _set(self, stream_id: str, **values: Any) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(log_streams)
                .where(log_streams.c.id == stream_id)
                .values(values | {"updated_at": datetime.now(UTC)})
            )

    def _seal(self, stream_id: str, hidden: dict[str, Any]) -> tuple[str, str | None]:
        plain = orjson.dumps(hidden)
        if not self._masters.enabled:
            return plain.decode(), None
        nonce = random.token_bytes(_NONCE)
        sealed = AESGCM(self._masters.keys[0]).encrypt(nonce, plain, _aad(stream_id))
        return base64.b64encode(nonce + sealed).decode(), self._masters.current_id

    def _open(self, stream_id: str, stored: str, key_id: str | None) -> dict[str, Any]:
        if key_id is None:
            opened: dict[str, Any] = orjson.loads(stored)
            return opened
        master = self._masters.by_id(key_id)
        data = base64.b64decode(stored)
        try:
            plain = AESGCM(master).decrypt(data[:_NONCE], data[_NONCE:], _aad(stream_id))
        except InvalidTag:
            raise MasterKeyError(
                f"the credentials of log stream {stream_id} do not decrypt: they were changed "
                "behind auditcore's back"
            ) from None
        decoded: dict[str, Any] = orjson.loads(plain)
        return decoded


def _aad(stream_id: str) -> bytes:
    return b"auditcore log stream credentials\0" + stream_id.encode()


_USERINFO = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@")


def _no_credentials_in_urls(plain: dict[str, Any]) -> None:
    """Settings that are not credentials are shown to whoever lists the stream: a URL with a
    user and password in it would show them (give them as the destination's own
    credential settings)."""
    for key, value in plain.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and _USERINFO.match(item):
                raise StreamConfigError(
                    f"settings.{key}: no user or password inside a URL (it would be shown "
                    "wherever the stream is listed); give them as their own settings"
                )


def _validated(destination: type[Destination], settings: Mapping[str, Any]) -> BaseModel:
    if not isinstance(settings, Mapping):
        raise StreamConfigError("settings: an object")
    try:
        return destination.Settings.model_validate(dict(settings))
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in problem['loc']) or 'settings'}: {problem['msg']}"
            for problem in error.errors(include_input=False)
        )
        raise StreamConfigError(f"settings of a {destination.kind} stream: {problems}") from None


def _info(row: Mapping[str, Any]) -> StreamInfo:
    destination = DESTINATIONS.get(row["kind"])
    secret_fields = destination.secret_fields if destination else frozenset()
    settings = dict(row["settings"]) | dict.fromkeys(sorted(secret_fields), HIDDEN)
    return StreamInfo(
        id=row["id"],
        workspace_id=row["workspace_id"],
        name=row["name"],
        kind=row["kind"],
        settings=settings,
        format=row["format"],
        filters={k: list(v) for k, v in row["filters"].items()},
        max_events=row["max_events"],
        max_bytes=row["max_bytes"],
        max_wait=row["max_wait"],
        max_attempts=row["max_attempts"],
        state=row["state"],
        position=row["position"],
        generation=row["generation"],
        attempts=row["attempts"],
        last_error=row["last_error"],
        delivered=row["delivered"],
        delivered_at=row["delivered_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        encrypted=row["secrets_key"] is not None,
    )


def stream_configs(audit: AuditCore) -> StreamConfigs:
    """The stream rows of ``audit``'s installation (the caller closes them)."""
    masters = audit.subject_keys.masters if audit.subject_keys is not None else None
    return StreamConfigs(
        audit.settings,
        audit.read_models.get("audit_events"),
        masters,
        reader=lambda: LogReader(audit.app),
    )
