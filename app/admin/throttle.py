"""Failed admin logins per client: after `MAX_FAILURES` wrong tokens in a window of
`WINDOW_MINUTES` (counted from its first failure), a client is refused (429 with `Retry-After`)
until the window ends.

The client is keyed as the intake keys it (`app.intake.clientip`: the peer, or what trusted
proxies say; an IPv6 /64). Counted with the `limits` package's in-memory fixed window: one
counter per client, dropped once its window is over (a moving window would keep an entry per
client ever seen), so memory stays bounded by the clients that failed recently. Per process,
like the intake's limit.
"""

from __future__ import annotations

import logging
import math
import time

from limits import RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter
from starlette.requests import Request

from app.intake.clientip import ClientResolver, rate_key

log = logging.getLogger("app.admin")

MAX_FAILURES = 10
WINDOW_MINUTES = 10
_NAMESPACE = "admin-auth"


class FailedLogins:
    """Counts wrong admin tokens per client key and says how long a refused client waits."""

    def __init__(self, clients: ClientResolver) -> None:
        self.clients = clients
        self.item = RateLimitItemPerMinute(MAX_FAILURES, WINDOW_MINUTES)
        self._limiter = FixedWindowRateLimiter(MemoryStorage())

    def client_key(self, request: Request) -> str:
        peer = request.client.host if request.client else None
        return rate_key(self.clients.client_ip(peer, request.headers.getlist("x-forwarded-for")))

    def wait(self, key: str) -> int | None:
        """None while the client may try; else the seconds until it may (>= 1)."""
        if self._limiter.test(self.item, _NAMESPACE, key):
            return None
        stats = self._limiter.get_window_stats(self.item, _NAMESPACE, key)
        return max(1, math.ceil(stats.reset_time - time.time()))

    def failed(self, key: str) -> None:
        self._limiter.hit(self.item, _NAMESPACE, key)
        if not self._limiter.test(self.item, _NAMESPACE, key):
            # Once per client and window: the failure that used up its tries. No address: the
            # log holds no personal data.
            log.warning("admin.auth_throttled", extra={"failures": MAX_FAILURES})
