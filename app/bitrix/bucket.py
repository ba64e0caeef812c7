"""Our picture of the portal's request bucket (docs/bitrix24.md §4.1): a leaky bucket that
fills by one per request and drains at the portal's rate. The client waits before a request
that would overflow it. Pure apart from sleeping; the clock is injectable.

The portal counts every request from this address, ours and other integrations', so its
bucket can be fuller than ours. Whenever we cannot know (after QUERY_LIMIT_EXCEEDED, or when a
worker takes over from another), the bucket is assumed full: from there, sending at the drain
rate is the fastest pace that is never refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class PortalBucket:
    """A leaky bucket of `capacity` requests draining `rate` requests a second."""

    def __init__(
        self,
        *,
        rate: float,
        capacity: float,
        full: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("rate must be positive and capacity at least 1")
        self.rate = rate
        self.capacity = capacity
        self._clock = clock
        self._level = capacity if full else 0.0
        self._at = clock()
        self._turn = asyncio.Lock()  # first come, first served

    @property
    def level(self) -> float:
        self._drain()
        return self._level

    def fill(self) -> None:
        """Assume the portal's bucket is full now."""
        self._drain()
        self._level = self.capacity

    def wait_seconds(self) -> float:
        """How long the next request would wait."""
        self._drain()
        return max(0.0, (self._level + 1 - self.capacity) / self.rate)

    async def acquire(self) -> None:
        """Wait until one more request fits, then count it."""
        async with self._turn:
            # The wait is computed, not polled; a fill() while sleeping makes it longer.
            while (wait := self.wait_seconds()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            self._level += 1

    def _drain(self) -> None:
        now = self._clock()
        self._level = max(0.0, self._level - (now - self._at) * self.rate)
        self._at = now
