"""Host names and addresses: what counts as this machine (loopback). A leaf: imports nothing
from the app, so the settings and the Bitrix client can both use it."""

from __future__ import annotations

import ipaddress


def is_loopback_host(host: str | None) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (brackets allowed)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
