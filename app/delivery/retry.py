"""The retry decision: error + attempts + times -> when to try next, or give up. Pure.

§ numbers refer to the sections of docs/bitrix24.md.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from app.bitrix import BitrixError, OperationTimeLimit, PermanentError, RateLimited


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped per delay, bounded by age and attempts.

    Defaults: first retry within 5 s, delays capped at 15 min, give up 3 days after acceptance
    or after 1,000 attempts, whichever comes first.
    """

    base_seconds: float = 5.0
    max_delay_seconds: float = 900.0
    horizon_seconds: float = 3 * 24 * 3600.0
    max_attempts: int = 1000
    # The portal's request bucket drains 2 requests/s: wait at least this after a 503 (§3, §4.1).
    rate_limited_min_seconds: float = 1.0
    # Without a known reset time, an OPERATION_TIME_LIMIT block lasts about a minute (§4.2).
    operation_limit_default_seconds: float = 60.0

    def next_attempt(
        self,
        error: BitrixError,
        *,
        attempts: int,
        accepted_at: datetime,
        now: datetime,
        rng: random.Random,
    ) -> datetime | None:
        """When to try again, or None to give up (permanent error, or past the horizon)."""
        if isinstance(error, PermanentError):
            return None
        give_up_at = accepted_at + timedelta(seconds=self.horizon_seconds)
        if now >= give_up_at or attempts >= self.max_attempts:
            return None
        # The exponent is capped: past 2**64 every delay is max_delay anyway, and a float
        # built from a larger int overflows.
        doubling = 2 ** min(max(attempts - 1, 0), 64)
        ceiling = min(self.max_delay_seconds, self.base_seconds * doubling)
        delay = rng.uniform(0, ceiling)
        if isinstance(error, RateLimited):
            delay = max(delay, self.rate_limited_min_seconds * rng.uniform(1.0, 2.0))
        elif isinstance(error, OperationTimeLimit):
            if error.reset_at is not None:
                wait = error.reset_at - now.timestamp()
            else:
                wait = self.operation_limit_default_seconds
            delay = max(delay, wait + rng.uniform(0, 1.0))
        return min(now + timedelta(seconds=delay), give_up_at)
