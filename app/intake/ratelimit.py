"""The per-client submission limit (`RATE_LIMIT_PER_IP`): a moving window per client per form.

Built on the `limits` package with its in-memory storage. A moving window admits at most N
posts in *any* window-long span (a fixed window would let a client post 2N across a window
boundary), and a refused post takes no slot, so a client that keeps hammering is let in again
as soon as its oldest accepted post leaves the window, which is what `Retry-After` says. State is
per process: with several replicas behind a balancer each one counts on its own.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

OFF = "0"


class RateLimit:
    """Counts posts per (form, client) and says how long a refused client should wait."""

    def __init__(self, rate: str) -> None:
        # The sync storage on purpose: each call is a few list operations under a lock, and
        # its expiry runs in a timer thread, not in the event loop it would otherwise share.
        self.item: RateLimitItem | None = None if rate.strip() == OFF else parse(rate)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @property
    def enabled(self) -> bool:
        return self.item is not None

    def hit(self, form_id: str, client_key: str) -> int | None:
        """Take a slot: None when the post may proceed, else the seconds to wait (>= 1)."""
        if self.item is None:
            return None
        if self._limiter.hit(self.item, form_id, client_key):
            return None
        stats = self._limiter.get_window_stats(self.item, form_id, client_key)
        return max(1, math.ceil(stats.reset_time - time.time()))
