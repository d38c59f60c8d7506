"""One way to reach ClickHouse: a server by http(s):// URL, or chDB in-process by chdb:// path.

Both give clickhouse-connect's ``Client``, so the read side runs the same SQL on either.
A server URL's user and password are percent-decoded; ``?verify=``, ``?ca_cert=``,
``?client_cert=``, ``?client_cert_key=`` and ``?tls_mode=`` go to the TLS connection
(https:// only).
Failure semantics: a malformed URL (a character that must be percent-encoded, a port that is
not a number, an unknown option) or an unreachable server is a one-line
``ConfigurationError`` that never shows the password.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from auditcore.clickhouse.cluster import CLUSTER_VARIABLE, SHARDED_VARIABLE, check_cluster
from auditcore.errors import ConfigurationError, one_line

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from auditcore.clickhouse.ddl import Ddl

CLICKHOUSE_VARIABLE = "AUDITCORE_CLICKHOUSE"
DEFAULT_CLICKHOUSE = "chdb://.auditcore/clickhouse"
DATABASE = "auditcore"
CONNECT_TIMEOUT = 5
READ_TIMEOUT = 300
"""Seconds a statement may wait for the server's answer (clickhouse-connect's default)."""

# clickhouse-connect logs a failed request before raising it; the error raised says it in one
# line. Without a handler of its own, Python's last-resort handler would print it too.
logging.getLogger("clickhouse_connect").addHandler(logging.NullHandler())


class ClickHouseLockedError(ConfigurationError):
    """The embedded chDB directory is already open in another process."""


_USERINFO = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:]|%[0-9A-Fa-f]{2}")
"""What a URL's user and password may hold as they are (RFC 3986); the rest is percent-encoded."""
_DATABASE = re.compile(r"[\w.-]{1,200}")
_TLS_OPTIONS = ("verify", "ca_cert", "client_cert", "client_cert_key", "tls_mode")
_TLS_MODES = ("mutual", "strict", "proxy")
_FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_EXAMPLE = "e.g. https://default:p%40ss@host:8443/auditcore?ca_cert=/etc/ssl/ca.pem"


@dataclass(frozen=True)
class ServerAddress:
    """A server URL taken apart: credentials percent-decoded, TLS options checked."""

    secure: bool
    host: str
    port: int
    username: str
    password: str
    database: str
    verify: bool = True
    ca_cert: str | None = None
    client_cert: str | None = None
    client_cert_key: str | None = None
    tls_mode: str | None = None
    """With a client certificate: ``mutual`` (clickhouse-connect's default: the server takes
    the user from the certificate), ``strict`` (the certificate and the password) or ``proxy``."""


@dataclass(frozen=True)
class ClickHouseTarget:
    """Where the read model lives, parsed from ``AUDITCORE_CLICKHOUSE``."""

    url: str = DEFAULT_CLICKHOUSE
    cluster: str | None = None
    sharded: bool = False
    """Several shards: ``Distributed`` tables over local ones, rows sharded by workspace."""

    @property
    def embedded(self) -> bool:
        return self.url.startswith("chdb://")

    @property
    def chdb_path(self) -> Path:
        path = self.url.removeprefix("chdb://").partition("?")[0]
        return Path(path or ".auditcore/clickhouse").resolve()

    @property
    def ddl(self) -> Ddl:
        """The read side's DDL for this database (``ON CLUSTER`` when a cluster is set)."""
        # Imported here: ddl needs the read-model declarations, which need the settings,
        # which need this module.
        from auditcore.clickhouse.ddl import Ddl  # noqa: PLC0415

        return Ddl(self.database, self.cluster, self.sharded)

    @property
    def database(self) -> str:
        """``chdb://PATH?database=NAME`` or the URL path of a server; ``auditcore`` by default."""
        if self.embedded:
            return self._embedded_database()
        return self.server().database

    @property
    def identity(self) -> str:
        """Which tables these are, wherever they are reached from: a cluster's replicas are
        one set of tables (followers of it may connect to different nodes)."""
        if self.embedded:
            return f"chdb:{self.chdb_path}/{self.database}"
        if self.cluster:
            return f"cluster:{self.cluster}/{self.database}"
        server = self.server()
        return f"{server.host}:{server.port}/{server.database}"

    def describe(self) -> str:
        """Where, without credentials (a malformed URL is described as such, never echoed)."""
        if self.embedded:
            return f"embedded chDB at {self.chdb_path}"
        try:
            server = self.server()
        except ConfigurationError:
            return "ClickHouse at a malformed URL"
        scheme = "https" if server.secure else "http"
        return f"ClickHouse at {scheme}://{server.host}:{server.port}/{server.database}"

    def server(self) -> ServerAddress:
        """The server URL's parts; ``ConfigurationError`` (one line, no password) if malformed."""
        if not self.url.startswith(("http://", "https://")):
            raise ConfigurationError(
                f"{CLICKHOUSE_VARIABLE} is not supported: use chdb://PATH for the embedded "
                "engine or http(s)://user:password@host:port/database for a server"
            )
        url = urlsplit(self.url)
        userinfo, at, hostport = url.netloc.rpartition("@")
        # A raw '/', '?' or '#' in a password ends the URL's authority early: the rest,
        # with its '@', lands in the path, query or fragment.
        cut_short = not at and "@" in url.path + url.query + url.fragment
        if cut_short or _has_raw_characters(userinfo):
            raise ConfigurationError(
                f"{CLICKHOUSE_VARIABLE}: the user or password holds a character that must be "
                "percent-encoded ('@' as %40, ':' in the user as %3A, '/' as %2F, '?' as %3F, "
                f"'#' as %23, '%' as %25), {_EXAMPLE}"
            )
        if url.fragment:
            raise ConfigurationError(f"{CLICKHOUSE_VARIABLE}: remove the '#…' part, {_EXAMPLE}")
        try:
            port = url.port
        except ValueError:
            raise ConfigurationError(
                f"{CLICKHOUSE_VARIABLE}: the port in {hostport!r} is not a number from 1 to "
                f"65535, {_EXAMPLE}"
            ) from None
        if not url.hostname or port == 0:
            raise ConfigurationError(
                f"{CLICKHOUSE_VARIABLE}: name a host (and a port from 1 to 65535), {_EXAMPLE}"
            )
        database = unquote(url.path.strip("/")) or DATABASE
        if not _DATABASE.fullmatch(database):
            raise ConfigurationError(
                f"{CLICKHOUSE_VARIABLE}: the database {database!r} (the URL's path) must be one "
                "name of letters, digits, '_', '.' or '-'"
            )
        secure = url.scheme == "https"
        options = _options(url.query, _TLS_OPTIONS)
        if options and not secure:
            raise ConfigurationError(
                f"{CLICKHOUSE_VARIABLE}: the TLS option(s) {', '.join(sorted(options))} need an "
                f"https:// URL, {_EXAMPLE}"
            )
        verify = options.pop("verify", "true").lower()
        if verify not in _FLAGS:
            raise ConfigurationError(
                f"{CLICKHOUSE_VARIABLE}: verify={verify!r} is not valid: use true or false"
            )
        if options.get("tls_mode", _TLS_MODES[0]) not in _TLS_MODES:
            raise ConfigurationError(
                f"{CLICKHOUSE_VARIABLE}: tls_mode={options['tls_mode']!r} is not valid: use "
                f"{', '.join(_TLS_MODES)}"
            )
        return ServerAddress(
            secure=secure,
            host=url.hostname,
            port=port or (8443 if secure else 8123),
            username=unquote(url.username or "") or "default",
            password=unquote(url.password or ""),
            database=database,
            verify=_FLAGS[verify],
            **options,
        )

    def _embedded_database(self) -> str:
        options = _options(urlsplit(self.url).query, ("database",))
        database = options.get("database", DATABASE)
        if not _DATABASE.fullmatch(database):
            raise ConfigurationError(
                f"{CLICKHOUSE_VARIABLE}: the database {database!r} must be one name of "
                "letters, digits, '_', '.' or '-'"
            )
        return database


def _has_raw_characters(userinfo: str) -> bool:
    return bool(_USERINFO.sub("", userinfo))


def _options(query: str, supported: tuple[str, ...]) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise ConfigurationError(
            f"{CLICKHOUSE_VARIABLE}: its options must read name=value&name=value"
        ) from None
    unknown = sorted({name for name, _ in pairs} - set(supported))
    if unknown:
        raise ConfigurationError(
            f"{CLICKHOUSE_VARIABLE}: unknown option(s) {', '.join(unknown)}; supported: "
            f"{', '.join(supported)}"
        )
    return dict(pairs)


def connect(target: ClickHouseTarget) -> Client:
    """Open a client on the target's database (one per thread: clients are not thread-safe),
    creating the database if it is missing; a configured cluster must exist there."""
    from auditcore.clickhouse.ddl import ensure_database  # noqa: PLC0415 - as in ``ddl``

    database = target.database  # checked before anything is opened
    if target.sharded and not target.cluster:
        raise ConfigurationError(
            f"{SHARDED_VARIABLE} needs a ClickHouse cluster ({CLUSTER_VARIABLE} or --cluster)"
        )
    client = _connect_embedded(target) if target.embedded else _connect_server(target)
    try:
        if target.cluster:
            check_cluster(client, target.cluster, target.describe(), sharded=target.sharded)
        if target.sharded:
            # An insert through a Distributed table returns once every shard committed its
            # rows (not queued on this node's disk to be forwarded later): positions and
            # dead letters are then as durable as on one shard, and a batch's rows are
            # either on a shard or not (auditcore.projection.tracking).
            client.set_client_setting("distributed_foreground_insert", 1)
        ensure_database(client, target.ddl)
    except BaseException:
        client.close()
        raise
    client.database = database
    return client


def _connect_server(target: ClickHouseTarget) -> Client:
    import clickhouse_connect  # noqa: PLC0415 - only when a command opens ClickHouse
    from clickhouse_connect.driver.exceptions import ClickHouseError  # noqa: PLC0415
    from urllib3 import Timeout  # noqa: PLC0415

    server = target.server()
    # Only when asked for: clickhouse-connect picks its own default from the certificate.
    tls: dict[str, Any] = {"tls_mode": server.tls_mode} if server.tls_mode else {}
    try:
        client = clickhouse_connect.get_client(
            host=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            secure=server.secure,
            verify=server.verify,
            ca_cert=server.ca_cert,
            client_cert=server.client_cert,
            client_cert_key=server.client_cert_key,
            connect_timeout=CONNECT_TIMEOUT,
            # The first statements are the client's handshake: a server that accepts the
            # connection and never answers is reported within seconds, not after 300.
            send_receive_timeout=CONNECT_TIMEOUT,
            # No HTTP session: a server refuses concurrent queries in one session, and
            # nothing here keeps state between statements (settings travel with each query).
            autogenerate_session_id=False,
            **tls,
        )
    except (ClickHouseError, OSError) as error:
        raise ConfigurationError(
            f"cannot reach {target.describe()}: {_unreachable(error, server.username)}. "
            f"Check {CLICKHOUSE_VARIABLE}."
        ) from error
    client.timeout = Timeout(connect=CONNECT_TIMEOUT, read=READ_TIMEOUT)  # type: ignore[attr-defined]
    return client


def _unreachable(error: BaseException, user: str) -> str:
    """Why a server cannot be reached, in a user's words: the socket error at the bottom of
    the HTTP client's chain of exceptions (its own texts quote pools, retries and URLs)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused (is ClickHouse running on that port?)"
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(cause, TimeoutError) or "timed out" in str(cause):
            return f"no answer within {CONNECT_TIMEOUT} s (timeout): is the host or port right?"
        if "AUTHENTICATION_FAILED" in str(cause):
            return f"the server refused user {user!r}: authentication failed"
        if isinstance(cause, ssl.SSLError):
            return f"TLS failed ({one_line(cause)})"
        cause = cause.__cause__ or cause.__context__
    return one_line(error)


def _connect_embedded(target: ClickHouseTarget) -> Client:
    """Through the process that owns the chDB directory if one answers (``owner``), else by
    opening it here. A directory another process holds but does not serve yet (an owner
    starting up) is waited for a few seconds before its lock is reported."""
    from auditcore.clickhouse import owner  # noqa: PLC0415 - embedded only

    path = target.chdb_path
    if owner.claimed(path):
        return _connect_chdb(target)
    through = _through_owner(path)
    if through is not None:
        return through
    try:
        with _engine_messages_silenced():
            return _connect_chdb(target)
    except ClickHouseLockedError:
        deadline = time.monotonic() + OWNER_WAIT
        while time.monotonic() < deadline:
            time.sleep(0.2)
            through = _through_owner(path)
            if through is not None:
                return through
        raise


OWNER_WAIT = 5.0
"""Seconds to wait for the process holding a chDB directory to serve it (it starts serving
right after opening it)."""


@contextmanager
def _engine_messages_silenced() -> Iterator[None]:
    """chDB prints its lock failure to the process's stderr itself; the error raised says it
    (one line, with what to do), so the engine's own line is dropped. Only in processes that
    do not own the engine (CLI commands), while they open it."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _through_owner(path: Path) -> Client | None:
    from auditcore.clickhouse.owner import read_owner  # noqa: PLC0415 - embedded only
    from auditcore.clickhouse.remote import OwnerClient, reachable  # noqa: PLC0415

    record = read_owner(path)
    if record is None or not reachable(record):
        return None
    return OwnerClient(record, path)


def _connect_chdb(target: ClickHouseTarget) -> Client:
    import clickhouse_connect  # noqa: PLC0415 - only when a command opens ClickHouse
    from clickhouse_connect.driver.exceptions import ClickHouseError  # noqa: PLC0415

    path = target.chdb_path
    path.mkdir(parents=True, exist_ok=True)
    try:
        client = clickhouse_connect.get_client(dsn=f"chdb://{path}")
    except ClickHouseError as error:
        if "already initialized with path" in str(error):
            raise ConfigurationError(
                f"this process already has the embedded ClickHouse open at another path, so it "
                f"cannot also open {path}: chDB runs one engine per process. Close the other "
                "AuditCore first, or use the same chdb:// path (with ?database=NAME to separate)."
            ) from error
        raise ClickHouseLockedError(
            f"cannot open the embedded ClickHouse (chDB) at {path}: another process is using "
            "it and does not serve it to others (`auditcore serve` and `project --follow` "
            "do). Only one process at a time can open a chDB directory: stop the other one, "
            "or run it as `auditcore serve` or `project --follow`, use another "
            f"directory with {CLICKHOUSE_VARIABLE}=chdb:///other/path, or run a ClickHouse "
            f"server and set {CLICKHOUSE_VARIABLE}=http://host:8123/auditcore."
        ) from error
    return client


def as_utc(value: Any) -> Any:
    """ClickHouse returns DateTime64('UTC') values as naive datetimes; make them aware."""
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def settings_clause(settings: Mapping[str, Any] | None) -> str:
    """Settings as the statement's own ``SETTINGS`` clause. Passed to clickhouse-connect
    instead, they cost a statement on embedded chDB ~20 ms (its backend saves the session's
    settings, sets each, runs the statement and restores each, one chDB call apiece)."""
    if not settings:
        return ""
    values = []
    for name, value in settings.items():
        if not _SETTING_NAME.fullmatch(name):
            raise ValueError(f"not a ClickHouse setting name: {name!r}")
        if isinstance(value, bool):
            literal = "1" if value else "0"
        elif isinstance(value, int | float):
            literal = repr(value)
        else:
            literal = "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
        values.append(f"{name} = {literal}")
    return " SETTINGS " + ", ".join(values)


def query_dicts(
    client: Client,
    sql: str,
    parameters: dict[str, Any] | None = None,
    settings: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``sql``'s rows as dicts, its time columns aware (UTC); ``settings`` apply to it alone."""
    result = client.query(sql + settings_clause(settings), parameters=parameters or {})
    names = result.column_names
    # Only the time columns need a zone; checking every value costs a fifth of a big export.
    moments = [
        name
        for name, kind in zip(names, result.column_types, strict=True)
        if "DateTime" in kind.name
    ]
    rows = [dict(zip(names, row, strict=True)) for row in result.result_rows]
    for row in rows:
        for name in moments:
            row[name] = as_utc(row[name])
    return rows
