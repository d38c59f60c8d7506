"""Who the client is behind proxies: only trusted proxies are believed, right to left."""

from __future__ import annotations

from ipaddress import ip_address

from hypothesis import given
from hypothesis import strategies as st

from auditcore.api.client_ip import client_ip
from auditcore.api.config import ApiConfig

TRUSTED = ApiConfig.networks(["10.0.0.0/8", "2001:db8::/32"])
trusted_hops = st.builds(
    lambda n: f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}", st.integers(0, 2**24 - 1)
)
public_hops = st.sampled_from(["203.0.113.9", "198.51.100.7", "2a00:1450::1", "8.8.8.8"])
junk = st.sampled_from(["unknown", "", "999.1.1.1", "_hidden"])


@given(st.lists(st.one_of(trusted_hops, public_hops), min_size=1, max_size=6), trusted_hops)
def test_the_client_is_the_right_most_untrusted_hop(hops: list[str], proxy: str) -> None:
    found = client_ip(proxy, ", ".join(hops), TRUSTED)
    untrusted = [hop for hop in hops if not hop.startswith("10.")]
    if untrusted:
        assert found == str(ip_address(untrusted[-1]))
    else:
        assert found == hops[0]


@given(st.lists(st.one_of(trusted_hops, public_hops, junk), max_size=6), public_hops)
def test_an_untrusted_peer_is_the_client_whatever_it_forwards(hops: list[str], peer: str) -> None:
    assert client_ip(peer, ", ".join(hops), TRUSTED) == str(ip_address(peer))


def test_a_garbled_hop_stops_the_walk_at_the_proxy() -> None:
    assert client_ip("10.0.0.1", "203.0.113.9, garbage", TRUSTED) == "10.0.0.1"
    assert client_ip("10.0.0.1", None, TRUSTED) == "10.0.0.1"
    assert client_ip(None, "203.0.113.9", TRUSTED) is None
    assert client_ip("testclient", "203.0.113.9", TRUSTED) is None
