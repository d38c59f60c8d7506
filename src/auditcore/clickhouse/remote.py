"""A clickhouse-connect client whose statements run on another process's embedded engine.

When ``auditcore serve`` or ``project --follow`` owns the chDB directory, every other local
process reaches the engine through the owner's endpoint (``auditcore.clickhouse.owner``).
This client is clickhouse-connect's own chDB client with the engine one socket away: it
builds the same statements (Native results, ``SETTINGS`` clauses, inserts read ``FROM
INFILE`` from a file of this user's), the owner runs each on its engine, and the same
clickhouse-connect code decodes the bytes, so a command's answer is what it would be if it
had opened the engine itself. It never imports chDB (a second of start-up).

Failure semantics: a statement the engine refuses raises clickhouse-connect's
``DatabaseError`` with the engine's text, as its chDB client does. The owner gone or not
answering (stopped, killed, restarting) is a ``ConfigurationError`` naming it; a statement
is never sent twice, so one cut off in flight may or may not have run (the reads that CLI
commands make are unaffected either way).
"""

from __future__ import annotations

import http.client
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clickhouse_connect.driver._backend.httpcommon import columns_only_meta, is_columns_only_query
from clickhouse_connect.driver._backend.models import (
    Capabilities,
    CommandExecution,
    QueryExecution,
    QueryRuntime,
)
from clickhouse_connect.driver._backendclient import SyncBackendClient
from clickhouse_connect.driver.binding import quote_identifier
from clickhouse_connect.driver.exceptions import (
    DatabaseError,
    NotSupportedError,
    _error_code_from_message,
    error_name_from_body,
)
from clickhouse_connect.driver.insert import InsertContext
from clickhouse_connect.driver.query import QueryContext
from clickhouse_connect.driver.transform import NativeTransform

from auditcore.clickhouse.owner import OwnerRecord
from auditcore.errors import ConfigurationError, one_line

TRANSPORT_SETTINGS = frozenset(
    {
        "database", "buffer_size", "session_id", "session_timeout", "session_check",
        "query_id", "quota_key", "compress", "decompress", "wait_end_of_query",
        "client_protocol_version", "role", "send_progress_in_http_headers",
        "http_headers_progress_interval_ms", "enable_http_compression",
    }
)  # fmt: skip
"""Settings an HTTP transport consumes itself; an engine would refuse them (as chDB's client)."""

PING_TIMEOUT = 2.0


class _Bytes:
    """A whole result as the byte source clickhouse-connect's decoder reads."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.last_message: bytes | None = None
        self.exception_tag: str | None = None

    @property
    def gen(self) -> Any:
        yield self.data

    def close(self) -> None:
        return None


class _Answer:
    def __init__(self, data: bytes, headers: Mapping[str, str]) -> None:
        self.data = data
        self.summary = {
            "read_rows": headers.get("X-Rows-Read", "0"),
            "read_bytes": headers.get("X-Bytes-Read", "0"),
        }


class OwnerBackend:
    """clickhouse-connect's backend seam, each engine call sent to the owner."""

    capabilities = Capabilities(native_async=False, sessions=False)
    show_clickhouse_errors = True

    def __init__(self, owner: OwnerRecord) -> None:
        self.owner = owner
        self.session_settings: dict[str, str] = {}
        """Client-level settings: a statement runs on a fresh handle, so they go with each."""

    def call(
        self,
        sql: str | bytes,
        fmt: str,
        params: Mapping[str, Any] | None = None,
        database: str | None = None,
        settings: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> _Answer:
        head = {
            "format": fmt,
            "params": {k.removeprefix("param_"): v for k, v in (params or {}).items()},
            "database": database,
            "settings": {**self.session_settings, **(settings or {})},
        }
        text = sql.encode() if isinstance(sql, str) else sql
        body = json.dumps(head).encode() + b"\n" + text
        connection = http.client.HTTPConnection("127.0.0.1", self.owner.port, timeout=timeout)
        try:
            connection.request(
                "POST",
                "/statement",
                body,
                {"Authorization": f"Bearer {self.owner.token}"},
            )
            response = connection.getresponse()
            data = response.read()
        except OSError as error:
            raise ConfigurationError(
                f"lost the embedded ClickHouse's owner, {self.owner.describe()}: "
                f"{one_line(error)}; run the command again (it opens the engine itself once "
                "the owner is gone)"
            ) from error
        finally:
            connection.close()
        if response.status == 400:
            message = data.decode("utf-8", "replace")
            message = message[message.find("Code: ") :].strip() if "Code: " in message else message
            raise DatabaseError(
                message, code=_error_code_from_message(message), name=error_name_from_body(message)
            )
        if response.status != 200:
            raise ConfigurationError(
                f"the embedded ClickHouse's owner, {self.owner.describe()}, refused the "
                f"statement ({response.status}: {data.decode('utf-8', 'replace')[:200]})"
            )
        return _Answer(data, dict(response.headers))

    def execute_query(
        self, context: QueryContext, runtime: QueryRuntime, prepped_query: str | bytes, /
    ) -> QueryExecution:
        context.show_clickhouse_errors = True
        _no_external(context.external_data)
        params = context.bind_params
        settings = _engine_settings(runtime.settings)
        if is_columns_only_query(context):
            probe = str(context.final_query) + _settings_clause(settings) + "\n FORMAT JSON"
            answer = self.call(probe, "JSON", params, runtime.database)
            return QueryExecution(columns=columns_only_meta(json.loads(answer.data)))
        if context.is_insert:
            answer = self.call(prepped_query, "TabSeparated", params, runtime.database, settings)
            return QueryExecution(source=_Bytes(b""), summary=answer.summary)
        clause = (_settings_clause(settings) + "\n FORMAT Native").encode()
        query = prepped_query.encode() if isinstance(prepped_query, str) else prepped_query
        final = query + clause
        answer = self.call(final, "Native", params, runtime.database)
        return QueryExecution(source=_Bytes(answer.data), summary=answer.summary)

    def execute_command(
        self,
        bound_cmd: str | bytes,
        bind_params: dict[str, str],
        data: str | bytes | None,
        external_data: Any,
        runtime: QueryRuntime,
        transport_settings: dict[str, str] | None,
        /,
    ) -> CommandExecution:
        _no_external(external_data)
        command = bound_cmd.decode() if isinstance(bound_cmd, bytes) else bound_cmd
        if data is not None:
            command += "\n" + (data.decode() if isinstance(data, bytes) else data)
        settings = _engine_settings(runtime.settings)
        # As chDB's client: a result-producing statement emits at least its names line, a
        # control statement nothing; the names line is then dropped.
        answer = self.call(
            command, "TabSeparatedWithNames", bind_params, runtime.database, settings
        )
        if not answer.data:
            return CommandExecution(body=b"", summary=answer.summary)
        _, _, body = answer.data.partition(b"\n")
        return CommandExecution(body=body, summary=answer.summary, result_format="TabSeparated")

    def execute_data_insert(
        self, context: InsertContext, runtime: QueryRuntime, body: Any, retry_body: Any, /
    ) -> dict[str, Any]:
        columns = ", ".join(quote_identifier(name) for name in context.column_names)
        # The body starts with the statement an HTTP request would carry: INFILE wants the rows.
        with tempfile.NamedTemporaryFile(suffix=".native") as file:
            for number, chunk in enumerate(body):
                file.write(chunk.partition(b"\n")[2] if number == 0 else chunk)
            file.flush()
            settings = _settings_clause(_engine_settings(runtime.settings))
            sql = (
                f"INSERT INTO {context.table} ({columns}) FROM INFILE "
                f"{_quote(file.name)}{settings} FORMAT Native"
            )
            answer = self.call(sql, "TabSeparated", None, runtime.database)
        return {"written_rows": answer.summary["read_rows"]}

    def execute_raw_query(
        self,
        final_query: str | bytes,
        bind_params: dict[str, str],
        external_data: Any,
        runtime: QueryRuntime,
        transport_settings: dict[str, str] | None,
        /,
    ) -> bytes:
        _no_external(external_data)
        settings = _engine_settings(runtime.settings)
        return self.call(final_query, "TabSeparated", bind_params, runtime.database, settings).data

    def execute_raw_insert(self, *_: Any) -> dict[str, Any]:
        raise NotSupportedError("raw inserts through the engine's owner are not supported")

    def execute_raw_stream(self, *_: Any) -> Any:
        raise NotSupportedError("raw streams through the engine's owner are not supported")

    def ping(self, timeout: float | None = None) -> bool:
        try:
            return self.call("SELECT 1", "TabSeparated", timeout=timeout).data.strip() == b"1"
        except (ConfigurationError, DatabaseError):
            return False

    def close(self) -> None:
        return None

    def close_connections(self) -> None:
        return None


class OwnerClient(SyncBackendClient):
    """A clickhouse-connect ``Client`` on the engine owned by the process ``owner`` names."""

    _backend: OwnerBackend

    def __init__(self, owner: OwnerRecord, chdb_path: Path) -> None:
        self.valid_transport_settings = set(TRANSPORT_SETTINGS)
        self._transform = NativeTransform()
        self._client_settings: dict[str, str] = {}
        self._backend = OwnerBackend(owner)
        super().__init__(
            database=None,
            uri=f"chdb://{chdb_path}",
            query_limit=0,
            query_retries=0,
            server_host_name=None,
        )

    def set_client_setting(self, key: str, value: Any) -> None:
        text = self._validate_setting(key, value, "error")
        if text is None:
            return
        if key not in TRANSPORT_SETTINGS:
            self._backend.session_settings[key] = text
        self._client_settings[key] = text

    def get_client_setting(self, key: str) -> str | None:
        return self._client_settings.get(key)

    def set_access_token(self, access_token: str) -> None:
        raise NotSupportedError("the engine's owner takes its own credential, not a token")


def reachable(owner: OwnerRecord) -> bool:
    """Whether ``owner`` answers with its credential, within ``PING_TIMEOUT``."""
    connection = http.client.HTTPConnection("127.0.0.1", owner.port, timeout=PING_TIMEOUT)
    try:
        connection.request("GET", "/ping", headers={"Authorization": f"Bearer {owner.token}"})
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def _engine_settings(settings: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in settings.items() if k not in TRANSPORT_SETTINGS}


def _settings_clause(settings: Mapping[str, str]) -> str:
    if not settings:
        return ""
    return "\n SETTINGS " + ", ".join(f"{k} = {_quote(str(v))}" for k, v in settings.items())


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _no_external(external_data: Any) -> None:
    if external_data is not None:
        raise NotSupportedError("external data is not supported by the embedded engine")
