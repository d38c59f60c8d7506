"""One retention runner at a time across processes: ``serve``'s scheduled pass, ``retention run``
(once or ``--follow``) and any other process on the same store.

PostgreSQL: a session advisory lock keyed by the store's schema (two stores in one database do
not exclude each other), held on a connection of its own for the whole run. SQLite: an
exclusive ``flock`` on ``retention.lock`` beside the control database.

Failure semantics: both locks belong to the process holding them and go with it: a runner
killed mid-run (SIGKILL included) releases the lock when its connection or file closes, and the
next run resumes the prune (``retention``). Waiting is bounded by ``wait`` seconds; a lock not
had by then is reported (``False``), never waited for without end.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

# An arbitrary, fixed first key of the advisory lock; the second is the schema's hash.
_RETENTION_LOCK = 0x52_45_54_4E  # "RETN"
_POLL = 0.05


@contextlib.contextmanager
def runner_lock(engine: Engine, wait: float) -> Iterator[bool]:
    """Hold the store's retention lock for the ``with``; yields whether it was had (within
    ``wait`` seconds)."""
    if engine.dialect.name == "postgresql":
        with _postgres_lock(engine, wait) as had:
            yield had
    else:
        database = engine.url.database or "control.sqlite"
        with _file_lock(Path(database).with_name("retention.lock"), wait) as had:
            yield had


@contextlib.contextmanager
def _postgres_lock(engine: Engine, wait: float) -> Iterator[bool]:
    arguments = {"key": _RETENTION_LOCK}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if wait > 0:
            # The wait is the server's: lock_timeout bounds pg_advisory_lock.
            connection.execute(text(f"SET lock_timeout = {int(wait * 1000)}"))
            try:
                connection.execute(
                    text("SELECT pg_advisory_lock(:key, hashtext(current_schema()))"), arguments
                )
                had = True
            except OperationalError:  # lock_timeout: another runner holds it
                had = False
            connection.execute(text("SET lock_timeout = 0"))
        else:
            had = bool(
                connection.execute(
                    text("SELECT pg_try_advisory_lock(:key, hashtext(current_schema()))"),
                    arguments,
                ).scalar()
            )
        try:
            yield had
        finally:
            if had:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key, hashtext(current_schema()))"),
                    arguments,
                )


@contextlib.contextmanager
def _file_lock(path: Path, wait: float) -> Iterator[bool]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                had = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    had = False
                    break
                time.sleep(_POLL)
        try:
            yield had
        finally:
            if had:
                fcntl.flock(file.fileno(), fcntl.LOCK_UN)
