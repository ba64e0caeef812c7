"""Filling the leaky bucket (docs/bitrix24.md §4.1): a portal whose other integrations keep its
request bucket full, as bench/drain.py's after-outage case starts it. A fake clock drives the
bucket, so nothing here depends on how fast the machine is."""

from __future__ import annotations

import httpx

from app.sandbox import Emulator, EmulatorConfig, create_emulator_app
from app.sandbox.limits import LeakyBucket
from tests.sandbox.conftest import WEBHOOK
from tests.servers import running

QUERY_LIMIT = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_full_bucket_admits_only_what_drains() -> None:
    clock = FakeClock()
    bucket = LeakyBucket(clock)
    bucket.fill(5)
    assert bucket.current(2.0) == 5
    assert not bucket.admit(rate=2.0, burst=5)
    clock.now += 0.5  # one request drains
    assert bucket.current(2.0) == 4
    assert bucket.admit(rate=2.0, burst=5)
    assert not bucket.admit(rate=2.0, burst=5)
    bucket.empty()
    assert [bucket.admit(rate=2.0, burst=5) for _ in range(6)] == [True] * 5 + [False]


def test_fill_bucket_makes_the_next_request_query_limit_exceeded() -> None:
    clock = FakeClock()
    emulator = Emulator(EmulatorConfig(rate_per_second=2, burst=50), clock=clock)
    emulator.fill_bucket()
    assert emulator.bucket_snapshot() == {"level": 50, "burst": 50, "rate_per_second": 2}
    with running(create_emulator_app(emulator)) as server, httpx.Client(base_url=server.url) as c:
        refused = c.post(WEBHOOK + "profile")
        assert refused.status_code == 503 and refused.json() == QUERY_LIMIT
        clock.now += 0.5
        assert c.post(WEBHOOK + "profile").status_code == 200
        assert c.post(WEBHOOK + "profile").status_code == 503
    assert emulator.snapshot()["counts"] == {  # refused calls count, and run nothing
        "requests": 3,
        "rejected_rate_limit": 2,
        "errors": 2,
        "calls": 1,
    }


def test_the_control_api_fills_and_empties_the_bucket() -> None:
    clock = FakeClock()
    emulator = Emulator(EmulatorConfig(rate_per_second=2, burst=3), clock=clock)
    with running(create_emulator_app(emulator)) as server, httpx.Client(base_url=server.url) as c:
        assert c.get("/_control/bucket").json() == {"level": 0, "burst": 3, "rate_per_second": 2}
        filled = c.post("/_control/bucket", json={"full": True})
        assert filled.status_code == 200 and filled.json()["level"] == 3
        assert c.post(WEBHOOK + "profile").json() == QUERY_LIMIT
        emptied = c.post("/_control/bucket", json={"full": False})
        assert emptied.status_code == 200 and emptied.json()["level"] == 0
        assert [c.post(WEBHOOK + "profile").status_code for _ in range(4)] == [200] * 3 + [503]
        for bad in ({}, {"full": "yes"}, {"full": True, "level": 1}, [True]):
            answer = c.post("/_control/bucket", json=bad)
            assert answer.status_code == 400, bad
        assert c.post("/_control/bucket", content=b"{").status_code == 400
