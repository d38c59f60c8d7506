"""Server secrets: random keys an installation keeps for itself (e.g. the one that signs
paging cursors), in the control database beside the event store.

Each secret is made on first use: the first process to need it stores 32 random bytes, and
a process starting at the same moment reads the row the other one stored (the insert of the
loser fails on the primary key, and it reads the winner's). Every process of the installation
therefore signs and checks with the same secret. A process keeps a secret for ``refresh``
seconds before reading it again, so a rotation reaches running servers within that time.

Failure semantics: a control database that cannot be reached raises the database's error to
the caller (a request then fails; nothing is signed with a made-up key).
"""

from __future__ import annotations

import secrets as random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Column, Engine, MetaData, String, Table, delete, insert, select
from sqlalchemy.exc import IntegrityError

from auditcore.store.control import UtcDateTime, control_engine, create_tables
from auditcore.store.settings import Settings

CURSOR_SECRET = "cursor-signing"  # noqa: S105 - the secret's name, not the secret
"""Signs the keyset cursors of event queries (HMAC-SHA256)."""

metadata = MetaData()
server_secrets = Table(
    "auditcore_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(64), nullable=False),  # 32 random bytes, as hex
    Column("created_at", UtcDateTime, nullable=False),
)


class ServerSecrets:
    """The installation's named secrets (created when first asked for), cached per process."""

    def __init__(
        self,
        settings: Settings,
        refresh: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._engine: Engine | None = None
        self._refresh = refresh
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: dict[str, tuple[bytes, float]] = {}

    def get(self, name: str) -> bytes:
        """The secret called ``name``, made now if the installation has none yet."""
        now = self._clock()
        with self._lock:
            cached = self._cached.get(name)
            if cached is not None and now - cached[1] < self._refresh:
                return cached[0]
            value = self._read_or_create(name)
            self._cached[name] = (value, now)
            return value

    def rotate(self, name: str) -> None:
        """Replace the secret with a new random one: what the old one signed stops being
        accepted (at once in this process, within ``refresh`` seconds in others)."""
        engine = self._connected()
        with engine.begin() as connection:
            connection.execute(delete(server_secrets).where(server_secrets.c.name == name))
            connection.execute(insert(server_secrets).values(_new_row(name)))
        with self._lock:
            self._cached.pop(name, None)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def _read_or_create(self, name: str) -> bytes:
        engine = self._connected()
        query = select(server_secrets.c.value).where(server_secrets.c.name == name)
        with engine.connect() as connection:
            found = connection.execute(query).scalar_one_or_none()
        if found is None:
            try:
                with engine.begin() as connection:
                    connection.execute(insert(server_secrets).values(_new_row(name)))
            except IntegrityError:
                pass  # Another process made it first: use theirs.
            with engine.connect() as connection:
                found = connection.execute(query).scalar_one()
        return bytes.fromhex(found)

    def _connected(self) -> Engine:
        if self._engine is None:
            engine = control_engine(self._settings)
            create_tables(engine, metadata)
            self._engine = engine
        return self._engine


def _new_row(name: str) -> dict[str, object]:
    return {"name": name, "value": random.token_hex(32), "created_at": datetime.now(UTC)}
