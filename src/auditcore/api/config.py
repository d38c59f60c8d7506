"""How the HTTP service is configured: proxies it trusts, and how much one request may carry."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network

from auditcore.errors import ConfigurationError

Network = IPv4Network | IPv6Network


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
