"""Choosing and opening the event store."""

from __future__ import annotations

import time

import pytest

from auditcore import AuditCore, ConfigurationError, Settings

pytestmark = pytest.mark.store_only  # the event store alone: one ClickHouse engine is enough


def test_a_postgres_url_configures_the_library_without_db_functions() -> None:
    env = Settings(
        event_store="postgresql://app:s%40cret@db.internal:6543/audit?schema=trail&pool_size=9"
    ).eventsourcing_env()

    assert env["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DBNAME"]) == (
        "db.internal",
        "6543",
        "audit",
    )
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"]) == ("app", "s@cret")
    assert (env["POSTGRES_SCHEMA"], env["POSTGRES_POOL_SIZE"]) == ("trail", "9")
    assert env["POSTGRES_ENABLE_DB_FUNCTIONS"] == "n"


def test_the_default_is_a_sqlite_file_under_dot_auditcore() -> None:
    assert Settings.from_env({}).event_store == ".auditcore/events.sqlite"
    assert Settings.from_env({"AUDITCORE_EVENT_STORE": "data/x.db"}).event_store == "data/x.db"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://127.0.0.1:5432", "must name a host and a database"),
        ("postgresql://h/db?sslmod=require", r"unknown option\(s\) \['sslmod'\]"),
        ("mysql://h/db", "use a postgresql:// URL or a plain path"),
    ],
)
def test_malformed_settings_say_how_to_fix_them(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Settings(event_store=url).eventsourcing_env()


def test_library_environment_variables_cannot_switch_on_db_functions(
    monkeypatch: pytest.MonkeyPatch, store_settings: Settings
) -> None:
    monkeypatch.setenv("POSTGRES_ENABLE_DB_FUNCTIONS", "y")
    monkeypatch.setenv("AUDITCORE_POSTGRES_ENABLE_DB_FUNCTIONS", "y")
    monkeypatch.setenv("PERSISTENCE_MODULE", "eventsourcing.popo")

    with AuditCore(store_settings) as audit:
        expected = "postgres" if store_settings.uses_postgres else "sqlite"
        assert expected in type(audit.app.recorder).__name__.lower()
        datastore = getattr(audit.app.recorder, "datastore", None)
        assert getattr(datastore, "enable_db_functions", False) is False


def test_an_unreachable_database_is_a_clear_error() -> None:
    started = time.monotonic()
    with pytest.raises(
        ConfigurationError,
        match=r"cannot reach PostgreSQL at 127.0.0.1:1: connection refused",
    ):
        AuditCore(
            Settings(event_store="postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=1")
        )
    assert time.monotonic() - started < 10
