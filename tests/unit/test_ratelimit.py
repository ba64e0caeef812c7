"""The per-client limit: a moving window per form and client, Retry-After in whole seconds."""

import time

from app.intake.ratelimit import RateLimit


def test_a_client_gets_n_posts_per_window_per_form() -> None:
    limit = RateLimit("3/minute")
    assert [limit.hit("contact", "203.0.113.1") for _ in range(3)] == [None, None, None]
    wait = limit.hit("contact", "203.0.113.1")
    assert wait is not None and 1 <= wait <= 60
    assert limit.hit("contact", "203.0.113.2") is None  # another client
    assert limit.hit("order", "203.0.113.1") is None  # another form


def test_refused_posts_take_no_slot_and_the_window_moves() -> None:
    limit = RateLimit("2/second")
    assert limit.hit("contact", "c") is None
    assert limit.hit("contact", "c") is None
    for _ in range(5):  # hammering does not extend the wait
        assert limit.hit("contact", "c") == 1
    time.sleep(1.05)
    assert limit.hit("contact", "c") is None


def test_zero_turns_the_limit_off() -> None:
    limit = RateLimit("0")
    assert not limit.enabled
    assert all(limit.hit("contact", "c") is None for _ in range(1000))
