"""The per-client submission limit (`RATE_LIMIT_PER_IP`): GCRA per client and form, held in
bounded memory (`RATE_LIMIT_MAX_CLIENTS`) or shared by replicas through Redis
(`RATE_LIMIT_STORAGE_URL`). Decides and says how long to wait; never answers a request.

GCRA (the generic cell rate algorithm) is a token bucket kept as one number per client, the
theoretical arrival time (TAT) of its next post: N posts at once, then one every window/N. Each
check is O(1), a refused post takes no slot, and the wait it gives is exactly when the next post
is admitted (`Retry-After`). A client whose TAT has passed has a full budget, exactly as one never
seen, so forgetting it loses nothing: the table evicts the least recently seen client when full,
and one not seen for a whole window is always such a client (docs/design.md, Rate limit).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from limits import parse
from pydantic import SecretStr
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger("app.intake")

OFF = "0"
# Redis sits next to the gateway: a check that takes longer than this means it is away, and
# every post would wait that long. While it is away this process counts alone, trying Redis
# again after SHARED_RETRY_SECONDS.
SHARED_TIMEOUT_SECONDS = 0.25
SHARED_RETRY_SECONDS = 5.0
KEY_PREFIX = "b24fg:rate:"

# GCRA on Redis, on the server's clock so that replicas agree. KEYS[1]: the client's key;
# ARGV: the interval between posts and the burst tolerance, in ms. Returns 0 when admitted,
# else the ms to wait. The key expires when its TAT passes: Redis forgets idle clients itself.
GCRA_SCRIPT = """
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return wait end
tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', tat), 'PX', tat - now)
return 0
"""


class LocalLimits:
    """GCRA state per key in one process: a float per client in an LRU of at most `max_keys`."""

    def __init__(
        self,
        *,
        interval: float,
        tolerance: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
        on_active_eviction: Callable[[], None] = lambda: None,
    ) -> None:
        self._interval = interval
        self._tolerance = tolerance
        self._max_keys = max_keys
        self._clock = clock
        self._on_active_eviction = on_active_eviction
        self._tat: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._tat)

    def hit(self, key: str) -> float:
        """Take a slot: 0.0 when admitted, else the seconds until the next post is."""
        now = self._clock()
        tat = max(self._tat.get(key, now), now)
        wait = tat - self._tolerance - now
        if wait > 0:
            # A refused client stays the most recently seen: hammering keeps its state alive.
            self._tat.move_to_end(key)
            return wait
        self._tat[key] = tat + self._interval
        self._tat.move_to_end(key)
        if len(self._tat) > self._max_keys:
            _, oldest = self._tat.popitem(last=False)
            if oldest > now:
                # A client seen within its window lost its count: more distinct clients
                # posted within one window than the table holds.
                self._on_active_eviction()
        return 0.0


class SharedLimits:
    """GCRA state in Redis, shared by every process that points at it."""

    def __init__(self, url: SecretStr, *, interval: float, tolerance: float) -> None:
        self._redis = Redis.from_url(
            url.get_secret_value(),
            socket_timeout=SHARED_TIMEOUT_SECONDS,
            socket_connect_timeout=SHARED_TIMEOUT_SECONDS,
            # One try: the fallback is immediate, and a retry would only make the post wait.
            retry=Retry(NoBackoff(), 0),
        )
        self._script = self._redis.register_script(GCRA_SCRIPT)
        self._args = [max(1, round(interval * 1000)), round(tolerance * 1000)]

    async def hit(self, key: str) -> float:
        """As `LocalLimits.hit`; raises RedisError or OSError when Redis cannot answer."""
        wait_ms = await self._script(keys=[KEY_PREFIX + key], args=self._args)
        return int(wait_ms) / 1000

    async def aclose(self) -> None:
        await self._redis.aclose()


class RateLimit:
    """Counts posts per (form, client) and says how long a refused client should wait.

    With `storage_url`, the counts live in Redis; when Redis fails, this process counts on its
    own (logged once per outage, counted by `on_fallback`) and tries Redis again shortly after.
    """

    def __init__(
        self,
        rate: str,
        *,
        max_clients: int,
        storage_url: SecretStr | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_fallback: Callable[[], None] = lambda: None,
        on_active_eviction: Callable[[], None] = lambda: None,
    ) -> None:
        item = None if rate.strip() == OFF else parse(rate)
        self.enabled = item is not None
        # N posts per window: one every window/N, and N at once (a burst of N-1 more).
        interval = item.get_expiry() / item.amount if item else 1.0
        tolerance = interval * (item.amount - 1) if item else 0.0
        self.local = LocalLimits(
            interval=interval,
            tolerance=tolerance,
            max_keys=max_clients,
            clock=clock,
            on_active_eviction=on_active_eviction,
        )
        self._shared = (
            SharedLimits(storage_url, interval=interval, tolerance=tolerance)
            if storage_url is not None and self.enabled
            else None
        )
        self._clock = clock
        self._on_fallback = on_fallback
        self._shared_down_until: float | None = None

    async def hit(self, form_id: str, client_key: str) -> int | None:
        """Take a slot: None when the post may proceed, else the seconds to wait (>= 1)."""
        if not self.enabled:
            return None
        key = f"{form_id} {client_key}"
        wait = None if self._shared is None else await self._shared_hit(self._shared, key)
        if wait is None:
            wait = self.local.hit(key)
        return max(1, math.ceil(wait)) if wait > 0 else None

    async def _shared_hit(self, shared: SharedLimits, key: str) -> float | None:
        """The shared decision, or None when this process must decide alone."""
        down_until = self._shared_down_until
        if down_until is not None and self._clock() < down_until:
            self._on_fallback()
            return None
        try:
            wait = await shared.hit(key)
        except (RedisError, OSError, TimeoutError) as exc:
            if down_until is None:
                log.warning(
                    "intake.rate_limit_shared_unavailable",
                    extra={"error": type(exc).__name__, "retry_seconds": SHARED_RETRY_SECONDS},
                )
            self._shared_down_until = self._clock() + SHARED_RETRY_SECONDS
            self._on_fallback()
            return None
        if down_until is not None:
            log.info("intake.rate_limit_shared_restored")
            self._shared_down_until = None
        return wait

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()
