"""Client address resolution: X-Forwarded-For only from trusted proxies, read from the right."""

import pytest

from app.intake.clientip import ClientResolver, rate_key

TRUSTED = ClientResolver(["127.0.0.1", "10.0.0.0/8"])
NOBODY = ClientResolver([])


@pytest.mark.parametrize(
    ("resolver", "peer", "forwarded", "client"),
    [
        # No trusted proxies: the header is never read.
        (NOBODY, "203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        (NOBODY, "127.0.0.1", ["198.51.100.1"], "127.0.0.1"),
        # An untrusted peer cannot pick its address by sending the header itself.
        (TRUSTED, "203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        # A trusted proxy: the address it appended is the client.
        (TRUSTED, "127.0.0.1", ["198.51.100.1"], "198.51.100.1"),
        (TRUSTED, "127.0.0.1", [], "127.0.0.1"),
        # The client wrote a fake hop on the left: ignored, the proxy's hop counts.
        (TRUSTED, "127.0.0.1", ["6.6.6.6, 198.51.100.1"], "198.51.100.1"),
        # A chain of trusted proxies is walked to the first untrusted hop.
        (TRUSTED, "127.0.0.1", ["198.51.100.1, 10.1.2.3"], "198.51.100.1"),
        (TRUSTED, "127.0.0.1", ["198.51.100.1", "10.1.2.3"], "198.51.100.1"),
        # Every hop trusted: the leftmost is as far as we can see.
        (TRUSTED, "127.0.0.1", ["10.9.9.9, 10.1.2.3"], "10.9.9.9"),
        # Garbage passed on by a trusted proxy: stop at the last address we can stand behind.
        (TRUSTED, "127.0.0.1", ["198.51.100.1, not-an-ip"], "127.0.0.1"),
        (TRUSTED, "127.0.0.1", ["garbage, 10.1.2.3"], "10.1.2.3"),
        (TRUSTED, "127.0.0.1", ["198.51.100.1:4711"], "198.51.100.1"),
        (TRUSTED, "127.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        (TRUSTED, None, ["198.51.100.1"], "unknown"),
        (TRUSTED, "not-an-ip", ["198.51.100.1"], "unknown"),
    ],
)
def test_the_client_is_the_first_hop_no_trusted_proxy_vouches_for(
    resolver: ClientResolver, peer: str | None, forwarded: list[str], client: str
) -> None:
    assert resolver.client_ip(peer, forwarded) == client


def test_ipv6_clients_share_a_bucket_per_64_and_mapped_ipv4_is_ipv4() -> None:
    assert rate_key("2001:db8:1:2:aaaa::1") == rate_key("2001:db8:1:2:bbbb::2")
    assert rate_key("2001:db8:1:2::1") != rate_key("2001:db8:1:3::1")
    assert rate_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert rate_key("203.0.113.7") == "203.0.113.7"
    assert rate_key("unknown") == "unknown"
