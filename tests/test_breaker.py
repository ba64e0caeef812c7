"""The portal breaker over real HTTP: while the portal is down the worker probes it with one
cheap call instead of spending every submission's attempts, shows it in /readyz and the
metrics, and releases the whole backlog the moment the portal answers again."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from app.store import Status, Store
from tests.backlog import back_off, enqueue_leads
from tests.conftest import Gateway, Portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]


async def all_delivered(store: Store, ids: list[str]) -> bool:
    rows = [await store.get(i) for i in ids]
    return all(r is not None and r.status is Status.DELIVERED for r in rows)


async def test_a_down_portal_is_probed_not_hammered_and_the_backlog_goes_when_it_is_back(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    portal.faults(outage=True)
    gateway = await make_gateway(portal, BREAKER_MAX_PROBE_SECONDS=0.5, ADMIN_TOKEN="t" * 32)
    async with gateway.client() as client:
        ids = [
            (await client.post("/forms/contact", data={"phone": f"+1555800{i:04d}"})).json()["id"]
            for i in range(20)
        ]
        await asyncio.sleep(4)
        ready = (await client.get("/readyz")).json()
        metrics = (await client.get("/metrics")).text
        page = (
            await client.get("/admin/dashboard", headers={"Authorization": "Bearer " + "t" * 32})
        ).text
    assert ready["portal"]["breaker"]["state"] == "open"
    assert ready["portal"]["breaker"]["last_error"] == "Unavailable"
    assert "gateway_portal_breaker_open 1.0" in metrics
    assert "Portal: <strong>down</strong>" in page
    store = await gateway.store()
    attempts = [row.attempts for i in ids if (row := await store.get(i)) is not None]
    # Without the breaker each would have been tried every 0.05-0.3 s: dozens of attempts.
    assert max(attempts) <= 2, attempts
    calls = Counter(r["method"] for r in portal.state()["requests"])
    assert calls["profile"] >= 4  # the probes, at most one every 0.5 s
    assert calls["batch"] <= 3

    portal.faults(outage=False)
    back = time.monotonic()
    await wait_for(lambda: all_delivered(store, ids), within=10, interval=0.05)
    assert time.monotonic() - back < 2.5  # a probe within 0.5 s, then the whole backlog
    async with gateway.client() as client:
        ready = (await client.get("/readyz")).json()
        metrics = (await client.get("/metrics")).text
    assert ready["portal"]["breaker"] == {"state": "closed"}
    assert "gateway_portal_breaker_open 0.0" in metrics
    assert Counter(r["ORIGIN_ID"] for r in portal.records("lead")) == Counter(ids)


async def test_when_the_portal_answers_again_what_waited_for_it_is_due_at_once(
    portal: Portal, make_gateway: MakeGateway, database_url: str
) -> None:
    """Submissions backed off for minutes because the portal was down (before the breaker
    opened) are released the moment it answers; one whose answer was lost keeps its wait."""
    ids = await enqueue_leads(database_url, 30)
    later = datetime.now(UTC) + timedelta(minutes=10)
    # The first may still be running in the portal: its answer was lost.
    await back_off(
        database_url, dict.fromkeys(ids, "Unavailable"), until=later, unknown=frozenset(ids[:1])
    )
    portal.faults(outage=True)
    gateway = await make_gateway(portal, BREAKER_MAX_PROBE_SECONDS=0.5)
    async with gateway.client() as client:
        fresh = (await client.post("/forms/contact", data={"phone": "+15558990000"})).json()["id"]
    store = await gateway.store()
    await wait_for(lambda: any(r["method"] == "profile" for r in portal.state()["requests"]))
    portal.faults(outage=False)
    await wait_for(lambda: all_delivered(store, [fresh, *ids[1:]]), within=10, interval=0.05)
    waiting = await store.get(ids[0])
    assert waiting is not None and waiting.status is Status.DELIVERING
    assert waiting.next_attempt_at == later


async def test_a_worker_that_starts_releases_what_an_earlier_one_backed_off_for_the_portal(
    portal: Portal, make_gateway: MakeGateway, database_url: str
) -> None:
    """Backed off for ten minutes by a worker that then stopped, while the portal was down:
    a new worker makes them due at once; a rejected one keeps its schedule."""
    ids = await enqueue_leads(database_url, 12)
    later = datetime.now(UTC) + timedelta(minutes=10)
    await back_off(
        database_url, {i: "ERROR_CORE" if i == ids[0] else "Unreachable" for i in ids}, until=later
    )
    gateway = await make_gateway(portal)
    store = await gateway.store()
    await wait_for(lambda: all_delivered(store, ids[1:]), within=10, interval=0.05)
    kept = await store.get(ids[0])
    assert kept is not None and kept.status is Status.DELIVERING and kept.next_attempt_at == later
