"""Who the client is: the peer address, or what trusted proxies say in `X-Forwarded-For`.

Pure. `X-Forwarded-For` is believed only when the peer is one of `TRUSTED_PROXIES`, and then
only up to the first address no trusted proxy vouches for, so a client cannot pick its own
address (and its own rate-limit bucket) by sending the header itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN = "unknown"
# One IPv6 subscriber usually holds a whole /64: keyed by address, one machine could rotate
# through 2**64 rate-limit buckets.
IPV6_KEY_PREFIX = 64


class ClientResolver:
    """Resolves the client address of a request from its peer and its forwarding headers."""

    def __init__(self, trusted_proxies: Iterable[str]) -> None:
        self.trusted: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(item, strict=False) for item in trusted_proxies
        )

    def is_trusted(self, address: IPAddress) -> bool:
        return any(address in network for network in self.trusted)

    def client_ip(self, peer: str | None, forwarded_for: Sequence[str]) -> str:
        """The client's address as text, or "unknown" when the peer is not an IP address.

        `forwarded_for` holds every `X-Forwarded-For` header value in order. Each trusted
        proxy appends the address it received the request from, so the chain is read from the
        right: past the trusted proxies, the first address is the client. Anything left of it
        was written by the client and is ignored.
        """
        current = _parse(peer)
        if current is None:
            return UNKNOWN
        if not self.trusted or not self.is_trusted(current):
            return str(current)
        hops = [hop.strip() for value in forwarded_for for hop in value.split(",")]
        for hop in reversed(hops):
            address = _parse(hop)
            if address is None:
                # A trusted proxy passed on something that is not an address: stop at the
                # last address we can stand behind.
                break
            current = address
            if not self.is_trusted(address):
                break
        return str(current)


def rate_key(client_ip: str) -> str:
    """The rate-limit bucket of a client: its IPv4 address, or its IPv6 /64."""
    address = _parse(client_ip)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        network = ipaddress.IPv6Network((address, IPV6_KEY_PREFIX), strict=False)
        return str(network)
    return client_ip


def _parse(value: str | None) -> IPAddress | None:
    if not value:
        return None
    text = value.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "203.0.113.7:51234"
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
