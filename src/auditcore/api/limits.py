"""Per-key request rates and per-address throttling of failed authentication (recorded).

Both are counted in this process's memory: behind a load balancer with N server processes, a
key may make up to N times its rate. Failure semantics: a limit that cannot decide (it never
fails) lets the request through; state is bounded (idle entries are dropped), so a flood of
distinct keys or addresses cannot grow it without end.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from ipaddress import IPv6Address, ip_address, ip_network
from typing import TYPE_CHECKING, Any

from auditcore.api.config import ResourceLimits
from auditcore.events.envelope import Actor, ActorType, RequestContext, Target

if TYPE_CHECKING:
    from auditcore.facade import AuditCore
    from auditcore.tenancy.directory import Directory

_ERROR_BODY: dict[str, Any] = {
    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer"},
    }
}
LIMITED: dict[int | str, dict[str, Any]] = {
    408: {"description": "The request body did not arrive in time.", "content": _ERROR_BODY},
    429: {
        "description": "Over a limit: this key's request rate (`rate_limited`), this "
        "workspace's concurrent recording requests, exports, reports or live streams "
        "(`too_many_concurrent`), or "
        "this address's failed authentications (`too_many_failed_authentications`).",
        "headers": _RETRY_AFTER,
        "content": _ERROR_BODY,
    },
    503: {
        "description": "A query ran past the server's time or memory limit "
        "(`query_timeout`, `query_too_heavy`), or the server is over its connection limit.",
        "headers": _RETRY_AFTER,
        "content": _ERROR_BODY,
    },
}
"""The limits' responses, as documented in OpenAPI for every route that needs a key."""

MAX_TRACKED = 100_000
"""Most keys or addresses remembered at once; the least recently seen are forgotten first."""


class RateLimiter:
    """A token bucket per key: ``burst`` requests at once, ``rate`` per second sustained."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(burst, 1)
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Spend one token of ``key``'s bucket: 0 if it had one, else the seconds until the
        next one (the request is refused and spends nothing)."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > MAX_TRACKED:
                self._buckets.popitem(last=False)
        return wait


@dataclass
class Throttled:
    """An address that has just crossed the threshold: what to record about it."""

    address: str
    """The address, or for IPv6 the /64 it is in."""
    last_address: str
    failures: int
    window: float
    first_failure_at: datetime
    last_failure_at: datetime
    key_ids: list[str]


@dataclass
class _Failures:
    times: deque[float] = field(default_factory=deque)
    first_at: datetime | None = None
    key_ids: dict[str, None] = field(default_factory=dict)
    recorded: float = -math.inf


class AuthThrottle:
    """Counts failed authentications per client address in a sliding window; an address
    with ``limit`` failures inside ``window`` seconds is refused until enough age out.

    IPv6 clients are counted per /64 (one host usually owns the whole /64, so counting single
    addresses would let it try 2^64 times as often). Successful requests do not reset the
    count: a client that mixes a valid key with guesses is still guessing.
    """

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._lock = threading.Lock()
        self._addresses: OrderedDict[str, _Failures] = OrderedDict()

    def retry_after(self, address: str | None) -> float:
        """0 if ``address`` may try to authenticate now, else the seconds until it may."""
        if self.limit <= 0 or address is None:
            return 0.0
        now = self.clock()
        with self._lock:
            failures = self._addresses.get(_group(address))
            if failures is None:
                return 0.0
            _expire(failures.times, now - self.window)
            if len(failures.times) < self.limit:
                return 0.0
            return failures.times[-self.limit] + self.window - now

    def failed(self, address: str | None, key_id: str | None) -> Throttled | None:
        """Count one failure; returns what to record when this one crossed the threshold
        (at most once per window per address, so a flood makes one summary, not many)."""
        if self.limit <= 0 or address is None:
            return None
        group = _group(address)
        now = self.clock()
        with self._lock:
            failures = self._addresses.pop(group, None) or _Failures()
            self._addresses[group] = failures
            while len(self._addresses) > MAX_TRACKED:
                self._addresses.popitem(last=False)
            _expire(failures.times, now - self.window)
            if not failures.times:
                failures.first_at = datetime.now(UTC)
                failures.key_ids.clear()
            failures.times.append(now)
            if key_id is not None and len(failures.key_ids) < 20:
                failures.key_ids[key_id] = None
            if len(failures.times) < self.limit or now - failures.recorded < self.window:
                return None
            failures.recorded = now
            return Throttled(
                address=group,
                last_address=address,
                failures=len(failures.times),
                window=self.window,
                first_failure_at=failures.first_at or datetime.now(UTC),
                last_failure_at=datetime.now(UTC),
                key_ids=list(failures.key_ids),
            )


def _expire(times: deque[float], before: float) -> None:
    while times and times[0] <= before:
        times.popleft()


def _group(address: str) -> str:
    parsed = ip_address(address)
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is None:
        return str(ip_network(f"{parsed}/64", strict=False))
    return str(parsed.ipv4_mapped or parsed) if isinstance(parsed, IPv6Address) else str(parsed)


class RequestGuard:
    """The per-request limits of one server: each key's rate and each address's failures."""

    def __init__(self, limits: ResourceLimits) -> None:
        self.rate = RateLimiter(limits.rate_per_second, limits.rate_burst)
        self.failures = AuthThrottle(limits.auth_failures, limits.auth_window)


def retry_after(seconds: float) -> dict[str, str]:
    """The ``Retry-After`` header: whole seconds, at least one."""
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def record_throttled(
    audit: AuditCore, directory: Directory, throttled: Throttled, security_workspace: str | None
) -> None:
    """Record ``auditcore.auth.failures_throttled``: in the security workspace (every failure
    from the address) and in each workspace whose real key ids were presented with a wrong
    secret (only its own key ids): a bad key names no workspace, so the operator's trail gets
    the whole picture and a tenant learns that someone holds its key ids."""
    owners = directory.key_workspaces(throttled.key_ids)
    trails: dict[str, list[str]] = {}
    if security_workspace:
        directory.ensure_workspace(security_workspace)
        trails[security_workspace] = throttled.key_ids
    for key_id, workspace_id in owners.items():
        trails.setdefault(workspace_id, [])
        if workspace_id != security_workspace:
            trails[workspace_id].append(key_id)
    for workspace_id, key_ids in trails.items():
        audit.record_control_event(
            "auditcore.auth.failures_throttled",
            workspace_id=workspace_id,
            metadata={
                "address": throttled.address,
                "failures": throttled.failures,
                "window_seconds": throttled.window,
                "first_failure_at": throttled.first_failure_at.isoformat(),
                "last_failure_at": throttled.last_failure_at.isoformat(),
                "key_ids": key_ids,
            },
            actor=Actor(id="auditcore", type=ActorType.SYSTEM, name="auditcore API"),
            source="api",
            targets=[Target(type="client_address", id=throttled.address)],
            context=RequestContext(ip=throttled.last_address),
        )
