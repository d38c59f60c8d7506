"""The client's address: the peer's, or behind trusted proxies what they forwarded.

``X-Forwarded-For`` is read right to left, skipping trusted proxies: the first address that
is not one of them is the client. Anything further left was written by the client itself and
could be forged, so it is never used.
"""

from __future__ import annotations

from ipaddress import ip_address

from auditcore.api.config import Network


def client_ip(
    peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]
) -> str | None:
    if peer is None or not _is_trusted(peer, trusted) or not forwarded_for:
        return _valid(peer)
    hops = [hop.strip() for hop in forwarded_for.split(",")]
    for hop in reversed(hops):
        address = _valid(hop)
        if address is None:
            # A garbled hop: nothing left of it can be trusted either.
            return _valid(peer)
        if not _is_trusted(address, trusted):
            return address
    return _valid(hops[0])


def _is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    try:
        parsed = ip_address(address)
    except ValueError:
        return False
    return any(parsed in network for network in trusted)


def _valid(address: str | None) -> str | None:
    if not address:
        return None
    try:
        return str(ip_address(address))
    except ValueError:
        return None
