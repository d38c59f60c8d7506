"""Fixtures: every store test runs against a real PostgreSQL and against SQLite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import psycopg
import pytest

from auditcore import AuditCore, Settings

ADMIN_URL = os.environ.get(
    "AUDITCORE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped afterwards."""
    name = f"auditcore_test_{uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_URL} ({error}); start it, or point "
            "AUDITCORE_TEST_POSTGRES at a server (bash .ci/run starts a local one)"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))
    yield url
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["postgres", "sqlite"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for an empty event store: its own schema on PostgreSQL, its own file on SQLite."""
    if request.param == "sqlite":
        return Settings(event_store=str(tmp_path / "events.sqlite"))
    database: str = request.getfixturevalue("postgres_database")
    schema = f"t_{uuid4().hex[:12]}"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return Settings(event_store=f"{database}?schema={schema}")


@pytest.fixture
def audit(store_settings: Settings) -> Iterator[AuditCore]:
    with AuditCore(store_settings) as core:
        yield core
