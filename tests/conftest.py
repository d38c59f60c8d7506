"""Fixtures: every store test runs against a real PostgreSQL and against SQLite, and every
test that touches ClickHouse against embedded chDB and against a ClickHouse server (the
stand-in of ``tests.clickhouse_server``): ``AUDITCORE_TEST_ENGINES=chdb,server`` (the default)
selects the engines."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit
from uuid import uuid4

import psycopg
import pytest

from auditcore import AuditCore, Settings
from tests.clickhouse_server import MISSING, STAND_IN, ClickHouseStandIn

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


def fresh_postgres_store(database: str) -> str:
    """An event-store URL for an empty schema of its own."""
    schema = f"t_{uuid4().hex[:12]}"
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{database}?schema={schema}"


@pytest.fixture(scope="session")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One chDB engine path for the whole run: chDB runs one engine per process."""
    return tmp_path_factory.mktemp("chdb")


ENGINES = [
    engine.strip()
    for engine in os.environ.get("AUDITCORE_TEST_ENGINES", "chdb,server").split(",")
    if engine.strip()
]
_KNOWN_ENGINES = {"chdb", "server"}
if not ENGINES or set(ENGINES) - _KNOWN_ENGINES:
    raise pytest.UsageError(
        f"AUDITCORE_TEST_ENGINES={os.environ.get('AUDITCORE_TEST_ENGINES')!r}: "
        "use chdb, server or chdb,server"
    )


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStandIn]:
    """One ClickHouse server (the stand-in) for the whole run, each test in its own database."""
    if not STAND_IN.exists():
        pytest.skip(MISSING)
    server = ClickHouseStandIn(tmp_path_factory.mktemp("clickhouse-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_clickhouse_server(tmp_path: Path) -> Iterator[ClickHouseStandIn]:
    """A ClickHouse server of this test's own, which it may stop and restart."""
    if not STAND_IN.exists():
        pytest.skip(MISSING)
    server = ClickHouseStandIn(tmp_path / "clickhouse-server")
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Each test that (through its fixtures) takes a ClickHouse database runs once per engine,
    but for tests marked ``store_only`` (they never reach ClickHouse): on the first engine."""
    if "clickhouse_engine" in metafunc.fixturenames:
        store_only = metafunc.definition.get_closest_marker("store_only") is not None
        engines = ENGINES[:1] if store_only else ENGINES
        metafunc.parametrize("clickhouse_engine", engines, indirect=True)


@pytest.fixture
def clickhouse_engine(request: pytest.FixtureRequest) -> str:
    """``chdb`` (embedded, in this process) or ``server`` (over HTTP)."""
    engine: str = request.param
    return engine


@pytest.fixture
def clickhouse_url(request: pytest.FixtureRequest, clickhouse_engine: str, chdb_dir: Path) -> str:
    """An empty ClickHouse database of this test's own: in the shared embedded engine, or on
    the shared server."""
    database = f"t_{uuid4().hex[:12]}"
    if clickhouse_engine == "chdb":
        return f"chdb://{chdb_dir}?database={database}"
    server: ClickHouseStandIn = request.getfixturevalue("clickhouse_server")
    return server.url(database)


@pytest.fixture(scope="module", params=ENGINES)
def module_clickhouse_url(request: pytest.FixtureRequest, chdb_dir: Path) -> str:
    """``clickhouse_url`` for a module's shared fixtures: its tests run once per engine."""
    database = f"m_{uuid4().hex[:12]}"
    if request.param == "chdb":
        return f"chdb://{chdb_dir}?database={database}"
    server: ClickHouseStandIn = request.getfixturevalue("clickhouse_server")
    return server.url(database)


@pytest.fixture
def process_clickhouse_url(
    request: pytest.FixtureRequest, clickhouse_engine: str, tmp_path: Path
) -> str:
    """An empty ClickHouse database that other processes can open: an embedded engine of its
    own (chDB lets one process at a time open a directory), or a database on the server."""
    if clickhouse_engine == "chdb":
        return f"chdb://{tmp_path / 'clickhouse'}"
    server: ClickHouseStandIn = request.getfixturevalue("clickhouse_server")
    return server.url(f"t_{uuid4().hex[:12]}")


@pytest.fixture(params=["postgres", "sqlite"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path, clickhouse_url: str) -> Settings:
    """Settings for an empty event store (its own schema on PostgreSQL, its own file on
    SQLite) and an empty ClickHouse database."""
    if request.param == "sqlite":
        return Settings(str(tmp_path / "events.sqlite"), clickhouse_url)
    database: str = request.getfixturevalue("postgres_database")
    return Settings(fresh_postgres_store(database), clickhouse_url)


@pytest.fixture
def pg_settings(postgres_database: str, clickhouse_url: str) -> Settings:
    """PostgreSQL (the primary store) and chDB, both empty."""
    return Settings(fresh_postgres_store(postgres_database), clickhouse_url)


@pytest.fixture
def audit(store_settings: Settings) -> Iterator[AuditCore]:
    with AuditCore(store_settings) as core:
        yield core
