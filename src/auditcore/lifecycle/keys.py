"""Master keys and per-subject data keys: what crypto-shredding destroys.

A subject (a person, named by an id within one workspace) has data keys (AES-256-GCM), each
stored wrapped (encrypted) by a master key, in the control database beside the event store
(``auditcore_subject_keys``). The master key never touches the database: it is read from
``AUDITCORE_MASTER_KEY_FILE`` (a file) or ``AUDITCORE_MASTER_KEY`` (the environment), each a
list of base64 keys of 32 bytes, the current one first and older ones after it, so a rotation
never stops a reader (see ``SubjectKeys.rotate_master``).

Erasing a subject sets its wrapped keys to NULL (and, on PostgreSQL, vacuums the table so the
old row versions are gone from the table's pages): nothing can decrypt that subject's fields
any more, while the rows record that it was erased and when.

Failure semantics: a master key that is missing, malformed or not the one that wrapped a key
raises ``MasterKeyError`` (a one-line ``ConfigurationError``); nothing is decrypted with a
guess. A key that is unknown or erased reads as ``None`` (the caller shows the fields as
erased). Database errors reach the caller.

Caching: opened keys are kept in the process. Every erasure stamps ``attempted_at`` on its row
in ``auditcore_erasures`` in the transaction that destroys the keys, and a process reads that
table's stamp at most every ``cache_seconds`` (1 s) before using its cache, dropping
everything it holds when the stamp moved: so another process's erasure is seen within about a
second (an event written in that second with the destroyed key reads as erased too), for the
price of one small query a second, however many subjects there are.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import uuid4

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import (
    Column,
    Connection,
    Engine,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    func,
    insert,
    select,
    text,
    update,
)

from auditcore.lifecycle.master import (
    MASTER_KEY_ENV,
    MASTER_KEY_FILE_ENV,
    MasterKeyError,
    MasterKeys,
)
from auditcore.store.control import UtcDateTime, control_engine, create_tables
from auditcore.store.settings import Settings

_NONCE = 12


@dataclass
class SubjectKeys:
    """The subjects' data keys, in the control database (opened on first use)."""

    settings: Settings
    masters: MasterKeys
    cache_seconds: float = 1.0
    _engine: Engine | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _by_id: dict[str, bytes | None] = field(default_factory=dict)
    _current: dict[tuple[str, str], tuple[str, bytes]] = field(default_factory=dict)
    _stamp: tuple[object, ...] = ()
    _checked_at: float = float("-inf")

    # Writing.

    def current(self, workspace_id: str, subject_id: str) -> tuple[str, bytes]:
        """The (key id, data key) to encrypt a subject's new fields with, made if it has
        none that is not erased."""
        self._revalidate()
        with self._lock:
            known = self._current.get((workspace_id, subject_id))
            if known is not None:
                return known

        table = SUBJECT_KEYS
        engine = self._connected()
        with engine.begin() as connection:
            row = connection.execute(
                select(table.c.key_id, table.c.wrapped, table.c.master_id)
                .where(
                    table.c.workspace_id == workspace_id,
                    table.c.subject_id == subject_id,
                    table.c.wrapped.is_not(None),
                )
                .order_by(table.c.created_at.desc())
                .limit(1)
            ).first()
            if row is not None:
                key_id, key = row[0], self._unwrap(row[0], row[1], row[2])
            else:
                key_id, key = str(uuid4()), secrets.token_bytes(32)
                if engine.dialect.name == "postgresql":
                    # No wait for this commit's flush: the event sealed with the key commits
                    # after it on the same server, and flushing its commit flushes this one
                    # (WAL is written in order), so no stored event can name a lost key.
                    connection.execute(text("SET LOCAL synchronous_commit = off"))
                connection.execute(
                    insert(table).values(
                        key_id=key_id,
                        workspace_id=workspace_id,
                        subject_id=subject_id,
                        wrapped=self._wrap(key_id, key),
                        master_id=self.masters.current_id,
                        created_at=datetime.now(UTC),
                    )
                )
        with self._lock:
            self._current[(workspace_id, subject_id)] = (key_id, key)
            self._by_id[key_id] = key
        return key_id, key

    # Reading.

    def data_keys(self, key_ids: Iterable[str]) -> dict[str, bytes | None]:
        """Each key by id: None when it was erased (or is unknown)."""
        self._revalidate()
        found: dict[str, bytes | None] = {}
        wanted: list[str] = []
        with self._lock:
            for key_id in set(key_ids):
                if key_id in self._by_id:
                    found[key_id] = self._by_id[key_id]
                else:
                    wanted.append(key_id)
        if not wanted:
            return found

        table = SUBJECT_KEYS
        rows: list[tuple[str, bytes | None, str]] = []
        with self._connected().connect() as connection:
            for start in range(0, len(wanted), 1000):
                rows += connection.execute(
                    select(table.c.key_id, table.c.wrapped, table.c.master_id).where(
                        table.c.key_id.in_(wanted[start : start + 1000])
                    )
                ).all()
        stored = {row[0]: row for row in rows}
        with self._lock:
            for key_id in wanted:
                row = stored.get(key_id)
                wrapped = None if row is None else row[1]
                value = (
                    None
                    if row is None or wrapped is None
                    else self._unwrap(key_id, wrapped, row[2])
                )
                self._by_id[key_id] = value
                found[key_id] = value
        return found

    # Erasing and rotating.

    def destroy(self, connection: Connection, workspace_id: str, subject_id: str) -> int:
        """Erase every key of the subject (in the caller's transaction); how many."""

        table = SUBJECT_KEYS
        destroyed = connection.execute(
            update(table)
            .where(
                table.c.workspace_id == workspace_id,
                table.c.subject_id == subject_id,
                table.c.wrapped.is_not(None),
            )
            .values(wrapped=None, erased_at=datetime.now(UTC))
        ).rowcount
        return int(destroyed)

    def forget_cached(self) -> None:
        with self._lock:
            self._current.clear()
            self._by_id.clear()

    def _revalidate(self) -> None:
        """Drop the cache if an erasure happened anywhere since it was last checked (at most
        once every ``cache_seconds``)."""
        now = time.monotonic()
        if now - self._checked_at < self.cache_seconds:
            return
        with self._connected().connect() as connection:
            stamp = tuple(
                connection.execute(
                    select(func.count(), func.max(ERASURES.c.attempted_at)).select_from(ERASURES)
                ).one()
            )
        with self._lock:
            if stamp != self._stamp:
                self._current.clear()
                self._by_id.clear()
                self._stamp = stamp
            self._checked_at = now

    def scrub(self) -> None:
        """Remove destroyed keys' old row versions from the table's pages (PostgreSQL keeps
        them until a vacuum); best effort, the erasure holds without it."""
        engine = self._connected()
        if engine.dialect.name != "postgresql":
            return

        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM auditcore_subject_keys"))

    def rotate_master(self) -> int:
        """Re-wrap every live data key with the current master key (the first listed); the
        others are then no longer needed. One transaction; returns how many were re-wrapped."""
        if not self.masters.enabled:
            raise MasterKeyError(
                f"no master key set: set {MASTER_KEY_FILE_ENV} or {MASTER_KEY_ENV}"
            )

        table = SUBJECT_KEYS
        current = self.masters.current_id
        count = 0
        with self._connected().begin() as connection:
            rows = connection.execute(
                select(table.c.key_id, table.c.wrapped, table.c.master_id)
                .where(table.c.wrapped.is_not(None), table.c.master_id != current)
                .with_for_update()
            ).all()
            for key_id, wrapped, old in rows:
                key = self._unwrap(key_id, wrapped, old)
                connection.execute(
                    update(table)
                    .where(table.c.key_id == key_id)
                    .values(wrapped=self._wrap(key_id, key), master_id=current)
                )
                count += 1
        return count

    def check_master(self) -> None:
        """Refuse at once a master key that cannot unwrap the stored keys (or none at all
        when keys exist), rather than at the first read."""

        table = SUBJECT_KEYS
        with self._connected().connect() as connection:
            ids = connection.execute(
                select(table.c.master_id).where(table.c.wrapped.is_not(None)).distinct()
            ).scalars()
            for wanted in ids:
                self.masters.by_id(wanted)

    def engine(self) -> Engine:
        return self._connected()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def _wrap(self, key_id: str, key: bytes) -> bytes:

        nonce = secrets.token_bytes(_NONCE)
        return nonce + AESGCM(self.masters.keys[0]).encrypt(nonce, key, key_id.encode())

    def _unwrap(self, key_id: str, wrapped: bytes, wrapped_by: str) -> bytes:

        master = self.masters.by_id(wrapped_by)
        data = bytes(wrapped)
        try:
            return AESGCM(master).decrypt(data[:_NONCE], data[_NONCE:], key_id.encode())
        except InvalidTag:
            raise MasterKeyError(
                f"subject key {key_id} does not decrypt with master key {wrapped_by}: the key "
                "table was altered"
            ) from None

    def _connected(self) -> Engine:
        if self._engine is None:
            engine = control_engine(self.settings)
            create_tables(engine, metadata)
            self._engine = engine
        return self._engine


metadata = MetaData()
SUBJECT_KEYS = Table(
    "auditcore_subject_keys",
    metadata,
    Column("key_id", String(36), primary_key=True),
    Column("workspace_id", String(64), nullable=False),
    Column("subject_id", String(256), nullable=False),
    Column("wrapped", LargeBinary, nullable=True),  # NULL: erased
    Column("master_id", String(16), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("erased_at", UtcDateTime, nullable=True),
    Index("auditcore_subject_keys_subject", "workspace_id", "subject_id"),
)
ERASURES = Table(
    "auditcore_erasures",
    metadata,
    Column("workspace_id", String(64), primary_key=True),
    Column("subject_id", String(256), primary_key=True),
    Column("requested_at", UtcDateTime, primary_key=True),
    Column("attempted_at", UtcDateTime, nullable=False),  # each run: caches elsewhere drop
    Column("finished_at", UtcDateTime, nullable=True),  # NULL: to be finished (redo)
)
