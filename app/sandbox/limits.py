"""The portal's two limits (docs/bitrix24.md §4): the per-portal leaky bucket of HTTP requests and
the per-method execution-time budget ("operating"). Bookkeeping only; the dispatcher decides.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

OPERATING_WINDOW_SECONDS = 600.0
OPERATING_BUCKET_SECONDS = 60.0


class LeakyBucket:
    """Each admitted request adds 1; the level drains `rate` per second (§4.1).

    A request that would lift the level above `burst` is refused and adds nothing, so with an
    empty bucket exactly `burst` requests pass at once and request `burst + 1` gets
    QUERY_LIMIT_EXCEEDED. `rate <= 0` turns the limit off. `fill` sets the level to the burst,
    as on a portal whose other integrations keep its bucket full: only the drain admits requests.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._level = 0.0
        self._at = clock()

    @property
    def level(self) -> float:
        return self._level

    def admit(self, *, rate: float, burst: int) -> bool:
        now = self._clock()
        if rate <= 0:
            self._at = now
            return True
        self._level = max(0.0, self._level - (now - self._at) * rate)
        self._at = now
        if self._level + 1 > burst:
            return False
        self._level += 1
        return True

    def current(self, rate: float) -> float:
        """The level now, after draining since the last request (without admitting one)."""
        if rate <= 0:
            return self._level
        return max(0.0, self._level - (self._clock() - self._at) * rate)

    def empty(self) -> None:
        self._level = 0.0
        self._at = self._clock()

    def fill(self, burst: int) -> None:
        """Full from now: the next request is refused until the level drains by one."""
        self._level = float(burst)
        self._at = self._clock()


@dataclass
class _Bucket:
    started: float
    seconds: float


class OperationMeter:
    """Execution seconds per method in one-minute buckets over a ten-minute window (§4.2).

    A bucket starts with the first call of its minute; `operating_reset_at` is when the oldest
    bucket leaves the window.
    """

    def __init__(self) -> None:
        self._buckets: dict[str, deque[_Bucket]] = {}

    def operating(self, method: str, now: float) -> float:
        return sum(b.seconds for b in self._current(method, now))

    def reset_at(self, method: str, now: float) -> int:
        buckets = self._current(method, now)
        oldest = buckets[0].started if buckets else now
        return int(oldest + OPERATING_WINDOW_SECONDS)

    def record(self, method: str, now: float, seconds: float) -> None:
        buckets = self._current(method, now)
        if buckets and now - buckets[-1].started < OPERATING_BUCKET_SECONDS:
            buckets[-1].seconds += seconds
        else:
            buckets.append(_Bucket(started=now, seconds=seconds))

    def clear(self) -> None:
        self._buckets.clear()

    def _current(self, method: str, now: float) -> deque[_Bucket]:
        buckets = self._buckets.setdefault(method, deque())
        while buckets and now - buckets[0].started >= OPERATING_WINDOW_SECONDS:
            buckets.popleft()
        return buckets
