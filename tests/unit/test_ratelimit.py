"""The per-client limit in one process: GCRA (a burst of N, then one post every window/N, the
wait exact), memory bounded by RATE_LIMIT_MAX_CLIENTS whatever the number of clients, and who is
forgotten first. Time is injected."""

from __future__ import annotations

from app.intake.ratelimit import RateLimit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_burst_of_n_then_one_post_every_window_over_n_with_the_exact_wait() -> None:
    clock = Clock()
    limit = RateLimit("3/minute", max_clients=100, clock=clock)
    assert [await limit.hit("contact", "192.0.2.1") for _ in range(3)] == [None] * 3
    assert await limit.hit("contact", "192.0.2.1") == 20  # one slot every 60/3 s
    clock.now += 19.5
    assert await limit.hit("contact", "192.0.2.1") == 1
    clock.now += 0.5
    assert await limit.hit("contact", "192.0.2.1") is None
    assert await limit.hit("contact", "192.0.2.1") == 20
    # Others, and this client on another form, have their own budget.
    assert await limit.hit("contact", "192.0.2.2") is None
    assert await limit.hit("partner", "192.0.2.1") is None


async def test_a_refused_post_takes_no_slot() -> None:
    clock = Clock()
    limit = RateLimit("2/second", max_clients=100, clock=clock)
    assert [await limit.hit("contact", "a") for _ in range(2)] == [None, None]
    for _ in range(50):
        assert await limit.hit("contact", "a") == 1
    clock.now += 0.5
    assert await limit.hit("contact", "a") is None


async def test_memory_is_bounded_whatever_the_number_of_distinct_clients() -> None:
    clock = Clock()
    limit = RateLimit("30/minute", max_clients=1000, clock=clock)
    for n in range(20_000):
        assert await limit.hit("contact", f"2001:db8:{n:x}::/64") is None
    assert len(limit.local) == 1000


async def test_a_client_that_keeps_posting_is_not_forgotten_while_strangers_pour_in() -> None:
    clock = Clock()
    evicted_active: list[int] = []
    limit = RateLimit(
        "3/minute",
        max_clients=100,
        clock=clock,
        on_active_eviction=lambda: evicted_active.append(1),
    )
    for _ in range(3):
        await limit.hit("contact", "attacker")
    for n in range(1000):
        await limit.hit("contact", f"stranger-{n}")
        if n % 50 == 0:  # refused posts keep it the most recently seen
            assert await limit.hit("contact", "attacker") is not None
    assert await limit.hit("contact", "attacker") == 20
    # Strangers seen within their window were forgotten to make room, and that was counted:
    # 1,001 clients, 100 kept.
    assert len(evicted_active) == 901


async def test_a_client_idle_for_a_window_is_forgotten_without_losing_anything() -> None:
    clock = Clock()
    evicted_active: list[int] = []
    limit = RateLimit(
        "3/minute",
        max_clients=100,
        clock=clock,
        on_active_eviction=lambda: evicted_active.append(1),
    )
    for _ in range(3):
        await limit.hit("contact", "early")
    clock.now += 60
    for n in range(100):
        await limit.hit("contact", f"later-{n}")
    assert evicted_active == []  # "early" had its full budget back: forgetting it changed nothing
    assert [await limit.hit("contact", "early") for _ in range(4)][-2:] == [None, 20]


async def test_rate_zero_counts_nothing() -> None:
    limit = RateLimit("0", max_clients=100)
    assert not limit.enabled
    assert [await limit.hit("contact", "a") for _ in range(100)] == [None] * 100
    assert len(limit.local) == 0
