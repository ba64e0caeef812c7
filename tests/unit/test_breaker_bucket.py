"""The portal breaker and our picture of the portal's request bucket (docs/bitrix24.md §4.1)."""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from app.bitrix import OutcomeUnknown, RateLimited, RejectedError, Unavailable, Unreachable
from app.bitrix.bucket import PortalBucket
from app.delivery.breaker import Breaker, portal_down

NOW = datetime(2026, 12, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_starts_full_so_a_new_worker_sends_at_the_drain_rate() -> None:
    clock = Clock()
    bucket = PortalBucket(rate=2, capacity=45, clock=clock)
    assert bucket.wait_seconds() == pytest.approx(0.5)
    clock.now += 10  # 20 requests drained
    assert bucket.level == pytest.approx(25) and bucket.wait_seconds() == 0
    empty = PortalBucket(rate=2, capacity=45, full=False, clock=clock)
    assert empty.wait_seconds() == 0


def test_after_query_limit_exceeded_the_bucket_is_assumed_full_not_slower() -> None:
    clock = Clock()
    bucket = PortalBucket(rate=2, capacity=45, full=False, clock=clock)
    bucket.fill()
    assert bucket.wait_seconds() == pytest.approx(0.5)  # the drain rate, no extra penalty
    clock.now += 0.5
    assert bucket.wait_seconds() == pytest.approx(0.0)


async def test_acquire_paces_requests_at_the_drain_rate_once_full() -> None:
    bucket = PortalBucket(rate=50, capacity=5)  # full from the start
    started = time.monotonic()
    for _ in range(10):
        await bucket.acquire()
    assert time.monotonic() - started >= 10 / 50 * 0.9
    await asyncio.sleep(0)


@pytest.mark.parametrize(
    ("error", "down"),
    [
        (Unreachable("refused"), True),
        (Unavailable("503 page"), True),
        (OutcomeUnknown("timeout", settled=False), True),
        (OutcomeUnknown("SQL query error!", settled=True), False),
        (RateLimited("QUERY_LIMIT_EXCEEDED"), False),
        (RejectedError("bad field"), False),
        (None, False),
    ],
)
def test_only_failures_of_the_portal_as_a_whole_open_the_breaker(
    error: Exception | None, down: bool
) -> None:
    assert portal_down(error) is down  # type: ignore[arg-type]


def test_the_breaker_probes_at_a_growing_capped_interval_and_closes_on_an_answer() -> None:
    breaker = Breaker(first_probe_seconds=0.5, max_probe_seconds=2.0)
    rng = random.Random(1)
    assert not breaker.open and breaker.snapshot() == {"state": "closed"}
    delays = []
    for _ in range(6):
        breaker.trip(Unavailable("503"), now=NOW, rng=rng)
        assert breaker.next_probe_at is not None
        delays.append((breaker.next_probe_at - NOW).total_seconds())
    ceilings = [0.5, 1.0, 2.0, 2.0, 2.0, 2.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert breaker.open and breaker.opened_at == NOW
    assert not breaker.probe_due(NOW) and breaker.probe_due(NOW + timedelta(seconds=2))
    assert breaker.snapshot()["state"] == "open"
    breaker.close()
    assert not breaker.open and breaker.probes == 0
