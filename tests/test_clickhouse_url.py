"""The ClickHouse server URL: credentials percent-decoded, TLS options passed to the connection
(through a TLS-terminating proxy in front of the server stand-in), and every malformed URL a
one-line error (exit 2 at the command line) that never shows the password."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from auditcore import AuditCore, Settings
from auditcore.clickhouse.connection import ClickHouseTarget, connect
from auditcore.errors import ConfigurationError
from auditcore.readmodel.queries import EventQuery
from tests.cli_run import AUDITCORE
from tests.clickhouse_server import MISSING, STAND_IN, ClickHouseStandIn
from tests.conftest import fresh_postgres_store
from tests.tlsproxy import Certificates, TlsProxy, make_certificates

PASSWORD = "p@ss:w/rd?#%"
ENCODED = "p%40ss:w%2Frd%3F%23%25"

BAD_URLS = {
    "http://default:p@ss@127.0.0.1:8123/db": "must be percent-encoded",
    "http://default:se/cret@127.0.0.1:8123/db": "must be percent-encoded",
    "http://default:se?cret@127.0.0.1:8123/db": "must be percent-encoded",
    "http://default:se#cret@127.0.0.1:8123/db": "must be percent-encoded",
    "http://default:se cret@127.0.0.1:8123/db": "must be percent-encoded",
    "http://default:secret@127.0.0.1:81x3/db": "is not a number from 1 to 65535",
    "http://default:secret@127.0.0.1:99999/db": "is not a number from 1 to 65535",
    "http://default:secret@:8123/db": "name a host",
    "http://default:secret@127.0.0.1:8123/a/b": "must be one name",
    "https://default:secret@127.0.0.1:8443/db?colour=red": "unknown option(s) colour",
    "https://default:secret@127.0.0.1:8443/db?verify=maybe": "verify='maybe' is not valid",
    "https://default:secret@127.0.0.1:8443/db?tls_mode=loose": "tls_mode='loose' is not valid",
    "http://default:secret@127.0.0.1:8123/db?ca_cert=/ca.pem": "need an https:// URL",
    "https://default:secret@127.0.0.1:8443/db#part": "remove the '#…' part",
    "ftp://default:secret@127.0.0.1/db": "is not supported",
    "chdb:///nonexistent/auditcore?database=a;b": "must be one name",
    "chdb:///nonexistent/auditcore?databse=a": "unknown option(s) databse",
}


@pytest.mark.parametrize(("url", "expected"), BAD_URLS.items())
def test_a_malformed_url_is_one_line_naming_the_fault_without_the_password(
    url: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as raised:
        connect(ClickHouseTarget(url))
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message
    assert "secret" not in message
    assert "cret" not in ClickHouseTarget(url).describe()


def test_a_malformed_url_exits_2_with_one_line_at_the_command_line(tmp_path: Path) -> None:
    """One of each kind (each command takes a few seconds to start): the rest share the code."""
    kinds = ("p@ss@", ":81x3/", "?colour=", "?databse=")
    for url, expected in BAD_URLS.items():
        if not any(kind in url for kind in kinds):
            continue
        done = subprocess.run(
            [AUDITCORE, "projections", "status"],
            env={
                **os.environ,
                "AUDITCORE_EVENT_STORE": str(tmp_path / "events.sqlite"),
                "AUDITCORE_CLICKHOUSE": url,
                "COLUMNS": "400",  # else the console wraps the line at 80 columns
            },
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2, (url, done.stderr)
        assert done.stderr.count("\n") == 1, (url, done.stderr)
        assert expected in done.stderr
        assert "Traceback" not in done.stderr


@pytest.fixture
def guarded_server(tmp_path: Path) -> Iterator[ClickHouseStandIn]:
    """A server stand-in whose password holds every character a URL must encode."""
    if not STAND_IN.exists():
        pytest.skip(MISSING)
    server = ClickHouseStandIn(tmp_path / "server", password=PASSWORD)
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


def _answers(url: str) -> int:
    client = connect(ClickHouseTarget(url))
    try:
        return int(client.command("SELECT 42"))  # type: ignore[arg-type]
    finally:
        client.close()


def test_credentials_are_percent_decoded(guarded_server: ClickHouseStandIn) -> None:
    assert _answers(guarded_server.url("db", credentials=f"default:{ENCODED}")) == 42
    with pytest.raises(ConfigurationError, match="cannot reach") as raised:
        _answers(guarded_server.url("db", credentials="default:wrong"))
    assert "\n" not in str(raised.value)


@pytest.fixture
def certificates(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path)


def test_tls_with_a_ca_file_verifies_the_server(
    guarded_server: ClickHouseStandIn, certificates: Certificates, postgres_database: str
) -> None:
    with TlsProxy(("127.0.0.1", guarded_server.port), certificates) as proxy:
        base = f"https://default:{ENCODED}@127.0.0.1:{proxy.port}/tls"
        # The whole read side through TLS: migrate, project, query.
        url = f"{base}?ca_cert={certificates.ca}"
        with AuditCore(Settings(fresh_postgres_store(postgres_database), url)) as audit:
            audit.record("incident.comment_added", workspace_id="acme", metadata={"body": "x"})
            audit.project()
            assert audit.reader("acme").count(EventQuery()) == 1
        assert _answers(f"{base}?verify=false") == 42
        with pytest.raises(ConfigurationError, match="CERTIFICATE_VERIFY_FAILED") as raised:
            _answers(base)  # the test CA is not among the system's
        assert "\n" not in str(raised.value)


def test_tls_client_certificate_is_presented(
    guarded_server: ClickHouseStandIn, certificates: Certificates
) -> None:
    target = ("127.0.0.1", guarded_server.port)
    with TlsProxy(target, certificates, require_client_cert=True) as proxy:
        base = f"https://default:{ENCODED}@127.0.0.1:{proxy.port}/tls?ca_cert={certificates.ca}"
        client = f"&client_cert={certificates.client}&client_cert_key={certificates.client_key}"
        # strict: the certificate and the password (the stand-in has no certificate users).
        assert _answers(f"{base}{client}&tls_mode=strict") == 42
        with pytest.raises(ConfigurationError, match="cannot reach"):
            _answers(base)
