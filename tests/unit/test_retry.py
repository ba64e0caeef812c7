"""The retry decision: backoff with full jitter, a cap, a horizon, and the portal's limits."""

import random
from datetime import UTC, datetime, timedelta

import pytest

from app.bitrix import (
    ConfigError,
    OperationTimeLimit,
    OutcomeUnknown,
    RateLimited,
    RejectedError,
    Unreachable,
)
from app.delivery import RetryPolicy

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
POLICY = RetryPolicy(base_seconds=5, max_delay_seconds=900, horizon_seconds=3 * 86400)


def delay(error: Exception, attempts: int, *, now: datetime = T0, seed: int = 1) -> float | None:
    at = POLICY.next_attempt(
        error,  # type: ignore[arg-type]
        attempts=attempts,
        accepted_at=T0,
        now=now,
        rng=random.Random(seed),
    )
    return None if at is None else (at - now).total_seconds()


@pytest.mark.parametrize("error", [ConfigError("bad webhook"), RejectedError("field")])
def test_permanent_errors_give_up_at_once(error: Exception) -> None:
    assert delay(error, 1) is None


@pytest.mark.parametrize(
    ("attempts", "ceiling"), [(1, 5), (2, 10), (3, 20), (5, 80), (9, 900), (40, 900)]
)
def test_delays_grow_exponentially_with_full_jitter_up_to_the_cap(
    attempts: int, ceiling: float
) -> None:
    seen = [delay(OutcomeUnknown("x"), attempts, seed=s) for s in range(200)]
    assert all(d is not None and 0 <= d <= ceiling for d in seen)
    assert max(d for d in seen if d is not None) > ceiling * 0.8  # jitter spans the range


def test_after_the_horizon_it_gives_up() -> None:
    late = T0 + timedelta(days=3)
    assert delay(Unreachable("down"), 50, now=late) is None
    almost = T0 + timedelta(days=3) - timedelta(seconds=1)
    assert delay(Unreachable("down"), 50, now=almost) == pytest.approx(1.0)


def test_after_the_last_attempt_it_gives_up() -> None:
    policy = RetryPolicy(max_attempts=3)
    rng = random.Random(1)
    error = OutcomeUnknown("x")
    assert policy.next_attempt(error, attempts=2, accepted_at=T0, now=T0, rng=rng) is not None
    assert policy.next_attempt(error, attempts=3, accepted_at=T0, now=T0, rng=rng) is None


def test_rate_limited_waits_at_least_a_second() -> None:
    assert all((delay(RateLimited("503"), 1, seed=s) or 0) >= 1.0 for s in range(100))


def test_operation_time_limit_waits_until_the_reset() -> None:
    error = OperationTimeLimit("blocked")
    error.reset_at = T0.timestamp() + 120
    assert 120 <= (delay(error, 1) or 0) <= 121
    assert 60 <= (delay(OperationTimeLimit("blocked"), 1) or 0) <= 61


def test_a_huge_attempt_count_gives_the_capped_delay_not_an_overflow() -> None:
    policy = RetryPolicy(max_attempts=100_000)
    at = policy.next_attempt(
        OutcomeUnknown("x"), attempts=5000, accepted_at=T0, now=T0, rng=random.Random(1)
    )
    assert at is not None and (at - T0).total_seconds() <= policy.max_delay_seconds
