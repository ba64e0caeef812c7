"""Keeps the emulator's pages, REST endpoint and control API to requests from its own origin: a
request a browser sends from another site is refused 403, and no answer carries CORS headers.

Applied by whoever serves the emulator (the gateway's `/sandbox` mount, the `sandbox` command),
not inside `create_emulator_app`: the gateway's own client calls the emulator in-process.
"""

from __future__ import annotations

import ipaddress

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# `same-site` too: a sibling subdomain is another origin, and may be someone else's.
_FOREIGN_FETCH_SITES = frozenset({"cross-site", "same-site"})
_SCHEMES = frozenset({"http", "https"})


class SameOriginOnly:
    """Refuses (403) a request whose `Origin` is not the request's own host, or whose
    `Sec-Fetch-Site` says it comes from another site. A request without either (curl, the
    gateway's client, a typed-in address) passes.

    With `local_only`, also refuses a peer that is not loopback, and a `Host` that is not a
    loopback name: a sandbox started only because it listens on loopback then stays on this
    machine even when the server is bound wider (`uvicorn --host`), sits behind a proxy, or a
    web page rebinds its own DNS name to 127.0.0.1 (its requests are then same-origin).
    """

    def __init__(self, app: ASGIApp, *, local_only: bool) -> None:
        self.app = app
        self.local_only = local_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (reason := self.refusal(scope)) is not None:
            await JSONResponse({"error": reason}, 403)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> str | None:
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.local_only:
            client = scope.get("client")
            if not (client and _is_loopback(client[0]) and _is_loopback(_hostname(host))):
                return "the sandbox answers only on this machine (set SANDBOX=true to open it)"
        if headers.get("sec-fetch-site", "").lower() in _FOREIGN_FETCH_SITES:
            return "the sandbox does not answer requests from other sites"
        origin = headers.get("origin")
        if origin is not None and _origin_host(origin) != _authority(host):
            return "the sandbox does not answer requests from other origins"
        return None


def _origin_host(origin: str) -> str | None:
    """`host[:port]` of an `Origin` value, without a default port; None for `null`."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    if not sep or scheme not in _SCHEMES or not rest or "/" in rest:
        return None
    return _authority(rest)


def _authority(host: str) -> str:
    """`host[:port]` without a default port. The scheme is not compared: behind a TLS proxy the
    page is https while this server sees http, and the origin is still its own."""
    host = host.strip().lower()
    name, _, port = host.rpartition(":")
    return name if port in ("80", "443") and not name.endswith(":") else host


def _hostname(host: str) -> str:
    """The name part of a `Host` header: `[::1]:8000` → `::1`, `localhost:8000` → `localhost`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket's view of 127.0.0.1
    return address.is_loopback
