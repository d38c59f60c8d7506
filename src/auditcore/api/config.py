"""How the HTTP service is configured: proxies it trusts, how much one request may carry, and
how much of the server one tenant may take (``ResourceLimits``, ``ServerTimeouts``)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_network

from auditcore.errors import ConfigurationError

Network = IPv4Network | IPv6Network


@dataclass(frozen=True)
class ResourceLimits:
    """What one key, one workspace or one client address may take of a server (per process).
    A zero turns that limit off."""

    rate_per_second: float = 50.0
    """Requests per second per API key, sustained (token bucket); beyond it 429."""
    rate_burst: int = 100
    """Requests a key may make at once before the sustained rate applies."""
    writes_per_workspace: int = 16
    """``POST /v1/events`` requests at once per workspace, body reading included (a body sent
    slowly holds a connection: without this, one tenant's key could hold every connection)."""
    exports_per_workspace: int = 2
    """Exports running at once per workspace (they are long and CPU-bound)."""
    reports_per_workspace: int = 2
    live_per_workspace: int = 20
    """Open live-tail connections per workspace."""
    live_buffer_bytes: int = 4 * 1024 * 1024
    """Events queued for one live watcher, in bytes of JSON, before it is told to reconnect."""
    live_catch_up_readers: int = 2
    """Far-behind live resumes read the store at once (server-wide); others wait their turn."""
    auth_failures: int = 20
    """Failed authentications from one client address (an IPv6 /64) in ``auth_window``..."""
    auth_window: float = 60.0
    """...after which that address gets 429 until its failures age out of the window."""
    security_workspace: str | None = "auditcore"
    """Where throttled failed authentication is recorded (besides the workspaces whose key
    ids were presented); created when first needed. None: only in those workspaces."""
    revocation_check: float = 2.0
    """Seconds between checks that the keys of open live streams and exports are still valid."""
    query_timeout: float = 30.0
    """ClickHouse ``max_execution_time`` of each query, in seconds (an export: of each page)."""
    query_memory_bytes: int = 2 * 1024**3
    """ClickHouse ``max_memory_usage`` of each query."""
    query_result_rows: int = 100_000
    """ClickHouse ``max_result_rows`` of each query (e.g. per-minute stats over years)."""
    export_threads: int = 1
    """ClickHouse ``max_threads`` of each export page query, so exports leave cores free."""
    export_page_rows: int = 500
    """Rows per export page: the step at which an export yields to other requests."""
    bulk_cpu: float = 0.25
    """CPU cores that exports and live catch-ups together may use in the API process
    (they hold Python's interpreter lock while they work; requests must not wait for it)."""
    switch_interval: float = 0.001
    """Seconds a thread may hold the interpreter lock while another waits for it
    (``sys.setswitchinterval``; Python's default is 0.005). A request waits up to this long
    at each hand-over while bulk work runs: shorter keeps its tail short, at a small cost in
    the bulk work's speed (the noisy-neighbour benchmark measures both)."""


@dataclass(frozen=True)
class ServerTimeouts:
    """The HTTP server's own guards against connections that hold a slot and send nothing."""

    header_timeout: float = 10.0
    """Seconds for a request's head (request line and headers) to arrive in full."""
    body_timeout: float = 30.0
    """Seconds the server waits for each next piece of a request body."""
    keepalive_timeout: float = 5.0
    """Seconds an idle connection (before its first request or between requests) stays open."""
    max_connections: int = 1000
    """Open connections (and requests in progress) at once; beyond it 503."""


@dataclass(frozen=True)
class ApiConfig:
    trusted_proxies: tuple[Network, ...] = ()
    """Peers whose ``X-Forwarded-For`` is believed (e.g. the load balancer's addresses)."""
    max_body_bytes: int = 1_048_576
    max_batch: int = 1000
    live_keepalive: float = 15.0
    """Seconds between keep-alive comments on an idle live tail (proxies close silent ones)."""
    run_processors: bool = True
    """Follow the store into ClickHouse inside the server (always so for embedded chDB)."""
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    server: ServerTimeouts = field(default_factory=ServerTimeouts)
    frame_ancestors: str = "'none'"
    """Who may show the viewer, docs and reports in a frame (CSP ``frame-ancestors``):
    ``'none'``, ``'self'`` or origins such as ``https://intranet.example.com``."""
    run_streams: bool = False
    """Deliver the log streams inside the server (``auditcore serve`` does unless
    ``--no-streams``; ``auditcore streams run`` is the same follower on its own)."""

    def __post_init__(self) -> None:
        try:
            object.__setattr__(
                self, "frame_ancestors", _checked_frame_ancestors(self.frame_ancestors)
            )
        except ValueError as error:
            raise ConfigurationError(str(error)) from None

    @staticmethod
    def networks(values: Iterable[str]) -> tuple[Network, ...]:
        networks = []
        for value in values:
            try:
                networks.append(ip_network(value, strict=False))
            except ValueError:
                raise ConfigurationError(
                    f"trusted proxy {value!r} is not an address or network, e.g. 10.0.0.0/8"
                ) from None
        return tuple(networks)


def _checked_frame_ancestors(value: str) -> str:
    # Imported here: the headers middleware needs Starlette, and the command line reads this
    # module's defaults for `serve`'s options without serving.
    from auditcore.api.headers import checked_frame_ancestors  # noqa: PLC0415

    return checked_frame_ancestors(value)
