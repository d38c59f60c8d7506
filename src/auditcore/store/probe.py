"""Before the event store's pool opens: one connection to PostgreSQL, to say what is wrong.

The pool behind the ``eventsourcing`` library retries for its whole timeout and then reports
"couldn't get a connection" whatever happened. One direct attempt first tells apart the
things a user fixes differently: nothing listening (refused), a host name that does not
resolve, a database that does not exist, the server refusing the user (authentication), and
no answer at all (timeout, after the URL's ``connect_timeout``).

Failure semantics: each is a one-line ``ConfigurationError`` naming the host, port and
database (never the password); anything else psycopg reports is passed on, on one line. A
successful probe closes its connection and leaves nothing behind.
"""

from __future__ import annotations

import re

import psycopg

from auditcore.errors import ConfigurationError, one_line
from auditcore.store.settings import EVENT_STORE_VARIABLE


def probe_postgres(env: dict[str, str]) -> None:
    """Connect once with the store's settings (``Settings.eventsourcing_env()``)."""
    host, port, database = env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]
    user, timeout = env["POSTGRES_USER"], env["POSTGRES_CONNECT_TIMEOUT"]
    where = f"PostgreSQL at {host}:{port}"
    try:
        psycopg.connect(
            host=host,
            port=port,
            dbname=database,
            user=user,
            password=env["POSTGRES_PASSWORD"],
            connect_timeout=timeout,
        ).close()
    except psycopg.OperationalError as error:
        text = str(error)
        raise ConfigurationError(
            _diagnosis(text, where, database, user, timeout) + f". Check {EVENT_STORE_VARIABLE}."
        ) from error


def _diagnosis(text: str, where: str, database: str, user: str, timeout: str) -> str:
    if "Connection refused" in text:
        return f"cannot reach {where}: connection refused (is PostgreSQL running on that port?)"
    if "failed to resolve host" in text or "could not translate host name" in text:
        return f"cannot reach {where}: the host name does not resolve"
    if re.search(r'database ".*" does not exist', text):
        return (
            f"{where} has no database {database!r}: create it (createdb {database}) or name "
            "an existing one in the URL's path"
        )
    if re.search(r'role ".*" does not exist|authentication failed|pg_hba\.conf|password', text):
        return f"{where} refused user {user!r}: authentication failed ({_reason(text)})"
    if "timeout expired" in text or "timed out" in text:
        return f"no answer from {where} within {timeout} s (timeout): is the host or port right?"
    return f"cannot open the event store ({where}): {_reason(text)}"


def _reason(text: str) -> str:
    """The server's own words: libpq's text after its last ``failed:``, on one line."""
    return one_line(Exception(text.rsplit("failed:", 1)[-1].replace("FATAL:", "").strip()))
