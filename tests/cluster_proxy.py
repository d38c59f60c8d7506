"""The ClickHouse server stand-in (``tests.clickhouse_server``) behind a small HTTP proxy
that records every statement auditcore sends and lets one node play a cluster.

The stand-in is one chDB node: it has no ZooKeeper and no clusters, so it refuses
``ON CLUSTER`` and ``Replicated*`` engines. Before forwarding, the proxy therefore rewrites
(in the ``query`` URL parameter and in a plain-text body, where statements travel):

- `` ON CLUSTER `name` `` is removed (each node runs the statement as this one does);
- ``ReplicatedXMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}', args)`` becomes
  ``XMergeTree(args)``;
- ``SYSTEM SYNC REPLICA`` becomes ``SELECT 1`` (a single node holds every part already);
- ``clusterAllReplicas('name', system.X)`` reads this node's ``system.X``;
- ``system.clusters`` reads the clusters the test declares;
- ``ENGINE = Distributed('cluster', 'db', 'local', key)`` becomes ``Merge('db', '^local$')``
  (one node holds every shard: a ``Merge`` table reads its local table, ``FINAL`` included),
  and an ``INSERT INTO`` such a table goes into its local table (what a foreground insert
  into a cluster of one shard does).

What was received is recorded before any rewrite, so tests assert the statements exactly as
a cluster would get them. Rows and answers come from the real engine behind the proxy.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import lz4.frame

_ON_CLUSTER = re.compile(r"\s+ON CLUSTER\s+(`(?:[^`\\]|\\.)*`|\w+)")
_REPLICATED = re.compile(
    r"Replicated(\w*MergeTree)\('/clickhouse/tables/\{uuid\}/\{shard\}', '\{replica\}'(?:, )?"
)
_SYNC_REPLICA = re.compile(r"^\s*SYSTEM SYNC REPLICA\b.*", re.S)
_ALL_REPLICAS = re.compile(r"clusterAllReplicas\('(?:[^'\\]|\\.)*', (system\.\w+)\)")
_DISTRIBUTED = re.compile(
    r"CREATE TABLE IF NOT EXISTS `(?P<db>[^`]+)`\.`(?P<name>[^`]+)`(?P<head>.*?)"
    r"ENGINE = Distributed\('[^']*', '[^']*', '(?P<local>[^']+)', [^\n]*\)\s*$",
    re.S,
)
_INSERT = re.compile(r"^(\s*INSERT INTO\s+)(?:`?(\w+)`?\.)?`?(\w+)`?(?=[\s(])", re.S)
_LEADING_INSERT = re.compile(rb"\A(\s*INSERT INTO .*?\bFORMAT\s+\w+)", re.S)
_HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive"}


def _lz4_insert(body: bytes) -> tuple[bytes, str | None]:
    """An lz4 body (one frame per block) decompressed, and the INSERT leading it, if any."""
    out = []
    while body:
        decompressor = lz4.frame.LZ4FrameDecompressor()
        out.append(decompressor.decompress(body))
        body = decompressor.unused_data
    plain = b"".join(out)
    match = _LEADING_INSERT.match(plain)
    return plain, match[1].decode() if match else None


class ClusterProxy(ThreadingHTTPServer):
    """Forwards to the stand-in at ``upstream`` (a port), as a cluster whose shards are the
    given ``clusters``: ``{name: [(shard_num, replica_num), ...]}``."""

    daemon_threads = True

    def __init__(self, upstream: int, clusters: dict[str, list[tuple[int, int]]]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.statements: list[str] = []
        self.inserts: list[tuple[str, dict[str, str]]] = []
        """Each INSERT as sent, with the request's URL parameters (its settings)."""
        self.distributed: dict[str, str] = {}
        """Each Distributed table created, with its local table."""
        self._lock = threading.Lock()
        rows = [
            f"('{name}', {shard}, {replica})"
            for name, hosts in clusters.items()
            for shard, replica in hosts
        ]
        values = ", ".join(rows or ["('', 0, 0)"])  # values() needs a row: filtered out
        self.clusters = (
            "(SELECT * FROM values('cluster String, shard_num UInt32, replica_num UInt32', "
            f"{values}) WHERE shard_num > 0)"
        )

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def record(self, statement: str) -> None:
        with self._lock:
            self.statements.append(statement)

    def rewrite(self, statement: str) -> str:
        statement = _ON_CLUSTER.sub("", statement)
        if match := _DISTRIBUTED.match(statement.strip()):
            self.distributed[match["name"]] = match["local"]
            statement = statement.strip()[: match.start("head") + len(match["head"])]
            statement += f"ENGINE = Merge('{match['db']}', '^{match['local']}$')"
        if (match := _INSERT.match(statement)) and match[3] in self.distributed:
            local = self.distributed[match[3]]
            statement = f"{match[1]}`{local}`{statement[match.end() :]}"
        statement = _REPLICATED.sub(r"\1(", statement)
        statement = _SYNC_REPLICA.sub("SELECT 1", statement)
        statement = _ALL_REPLICAS.sub(r"\1", statement)
        return statement.replace("system.clusters", self.clusters)

    @contextlib.contextmanager
    def running(self) -> Iterator[ClusterProxy]:
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.shutdown()
            self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ClusterProxy
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: object) -> None:
        pass

    def finish(self) -> None:
        if self._upstream is not None:
            self._upstream.close()
        super().finish()

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", ""):
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self) -> None:
        url = urlsplit(self.path)
        params = parse_qsl(url.query, keep_blank_values=True)
        body = self._body()
        plain = not self.headers.get("Content-Encoding") and "multipart" not in (
            self.headers.get("Content-Type") or ""
        )
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if headers.get("Content-Encoding") == "lz4" and body:
            # clickhouse-connect's Native inserts: the statement leads the compressed body.
            body, statement = _lz4_insert(body)
            if statement is not None:
                self.server.record(statement)
                self.server.inserts.append((statement, dict(params)))
                rewritten = self.server.rewrite(statement).encode()
                body = rewritten + body[len(statement.encode()) :]
            headers.pop("Content-Encoding")
        query = dict(params).get("query")
        if query is not None:
            self.server.record(query)
            if query.lstrip().upper().startswith("INSERT"):
                self.server.inserts.append((query, dict(params)))
            params = [(k, self.server.rewrite(v) if k == "query" else v) for k, v in params]
        elif plain and body:
            self.server.record(body.decode())
            body = self.server.rewrite(body.decode()).encode()
        # One upstream connection per client connection, kept alive as the client keeps
        # its own: the stand-in then runs a connection's requests one after another, as it
        # would the client's (a fresh connection each time could find the session still
        # held by the request before).
        if self._upstream is None:
            self._upstream = http.client.HTTPConnection(
                "127.0.0.1", self.server.upstream, timeout=300
            )
        try:
            self._upstream.request(
                self.command, url._replace(query=urlencode(params)).geturl(), body, headers
            )
            response = self._upstream.getresponse()
            data = response.read()
        except BaseException:
            self._upstream.close()
            self._upstream = None
            raise
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
