"""Never lose, never hammer: outages with random 5xx, the portal's request limit, a blocked
method, and a killed process. Each test counts records per unique marker: 0 lost, 0 doubled."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from app.store import Status, Store, create_engine
from tests.backlog import enqueue_leads
from tests.cli import console_script
from tests.conftest import Gateway, Portal, new_portal, wait_for
from tests.servers import free_port

MakeGateway = Callable[..., Awaitable[Gateway]]


async def post_many(gateway_url: str, phones: list[str], *, concurrency: int = 16) -> list[str]:
    limit = asyncio.Semaphore(concurrency)

    async def one(client: httpx.AsyncClient, phone: str) -> str:
        async with limit:
            response = await client.post("/forms/contact", data={"phone": phone})
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    async with httpx.AsyncClient(base_url=gateway_url, timeout=30) as client:
        return list(await asyncio.gather(*(one(client, p) for p in phones)))


async def delivered_count_is(store: Store, expected: int) -> bool:
    return (await store.count_by_status())[Status.DELIVERED] == expected


def lead_origins(portal: Portal) -> Counter[str]:
    return Counter(str(r["ORIGIN_ID"]) for r in portal.records("lead"))


@pytest.mark.slow
async def test_a_20_s_outage_and_random_5xx_lose_and_double_nothing(
    make_gateway: MakeGateway,
) -> None:
    portal = new_portal(rate_per_second=0, seed=11)
    try:
        portal.faults(outage=True, failure_rate=0.2)
        # Batches of 10: enough requests after the outage for the random 5xx to hit.
        gateway = await make_gateway(portal, RETRY_MAX_DELAY_SECONDS=1.0, WORKER_BATCH_SIZE=10)
        started = time.monotonic()
        posting = asyncio.create_task(
            post_many(gateway.url, [f"+1555400{i:04d}" for i in range(300)])
        )
        await asyncio.sleep(max(0.0, 20 - (time.monotonic() - started)))
        portal.faults(outage=False)  # the portal is back; 20% of calls still fail with 5xx
        ids = await posting
        store = await gateway.store()

        await wait_for(lambda: delivered_count_is(store, 300), within=90, interval=0.25)
        counts = portal.state()["counts"]
        assert counts["fault_outage"] > 0 and counts["fault_failure"] > 0
        assert lead_origins(portal) == Counter({i: 1 for i in ids})
    finally:
        portal.server.stop()


async def test_a_backlog_of_1000_leads_drains_without_a_single_503(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # The portal's defaults: 2 requests/s, burst 50; the gateway's limiter matches them.
    portal = new_portal(rate_per_second=2, burst=50)
    try:
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'backlog.db'}"
        ids = await enqueue_leads(db_url, 1000)
        gateway = await make_gateway(portal, DATABASE_URL=db_url)
        store = await gateway.store()

        await wait_for(lambda: delivered_count_is(store, 1000), within=60, interval=0.2)
        state = portal.state()
        assert state["counts"].get("rejected_rate_limit", 0) == 0
        assert lead_origins(portal) == Counter({i: 1 for i in ids})
        assert state["counts"]["batch"] == 20  # 50 leads a call
    finally:
        portal.server.stop()


async def test_the_client_paces_itself_to_the_portal_limit_past_the_burst(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # Small batches force 100 calls through a bucket of 10 draining 20/s: past the burst, the
    # gateway must wait its turn exactly as the portal counts, or it gets 503s.
    portal = new_portal(rate_per_second=20, burst=10)
    try:
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'paced.db'}"
        ids = await enqueue_leads(db_url, 300)
        gateway = await make_gateway(
            portal,
            DATABASE_URL=db_url,
            WORKER_BATCH_SIZE=3,
            BITRIX_RATE_PER_SECOND=20,
            BITRIX_BURST=10,
        )
        store = await gateway.store()
        started = time.monotonic()

        await wait_for(lambda: delivered_count_is(store, 300), within=60, interval=0.1)
        elapsed = time.monotonic() - started
        state = portal.state()
        assert state["counts"].get("rejected_rate_limit", 0) == 0
        assert state["counts"]["batch"] == 100
        assert elapsed >= (100 - 10) / 20 * 0.9  # it really waited for the bucket
        assert lead_origins(portal) == Counter({i: 1 for i in ids})
    finally:
        portal.server.stop()


async def test_a_bucket_already_full_costs_at_most_one_query_limit_exceeded_and_no_failure(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # Another integration shares the portal's bucket: it is full when the gateway starts. The
    # gateway starts as if it were (it cannot know) and sends at the drain rate.
    portal = new_portal(rate_per_second=5, burst=5)
    try:
        await asyncio.to_thread(fill_bucket, portal, 5)
        db_url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
        ids = await enqueue_leads(db_url, 20)
        gateway = await make_gateway(portal, DATABASE_URL=db_url, WORKER_BATCH_SIZE=2)
        store = await gateway.store()

        await wait_for(lambda: delivered_count_is(store, 20), within=60, interval=0.1)
        assert portal.state()["counts"].get("rejected_rate_limit", 0) <= 1
        assert (await store.count_by_status())[Status.FAILED] == 0
        assert lead_origins(portal) == Counter({i: 1 for i in ids})
    finally:
        portal.server.stop()


def fill_bucket(portal: Portal, requests: int) -> None:
    for _ in range(requests):
        httpx.post(portal.webhook_url + "profile").raise_for_status()


DEAL_FORMS = """
[forms.contact]
entity = "lead"

[forms.order]
entity = "deal"
contact = "always_create"
"""


async def test_an_operation_time_limit_on_deals_pauses_only_deals(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    forms = tmp_path / "forms.toml"
    forms.write_text(DEAL_FORMS)
    portal.faults(
        fail_methods={
            "crm.deal.add": {
                "count": 1000,
                "status": 429,
                "error": "OPERATION_TIME_LIMIT",
                "description": "Method is blocked due to operation time limit.",
            }
        }
    )
    gateway = await make_gateway(portal, FORMS_FILE=str(forms))
    store = await gateway.store()
    async with gateway.client() as client:
        first = await client.post("/forms/order", data={"name": "A", "phone": "+15550000001"})
        first_id = first.json()["id"]

        async def first_attempted() -> bool:
            return bool(await store.attempts_of(first_id))

        await wait_for(first_attempted)
        later_deals = [
            (await client.post("/forms/order", data={"name": "B", "phone": f"+1555000100{i}"}))
            for i in range(3)
        ]
    lead_ids = await post_many(gateway.url, [f"+1555500{i:04d}" for i in range(5)])

    async def leads_delivered() -> bool:
        counts = await store.count_by_status()
        return counts[Status.DELIVERED] == 5

    await wait_for(leads_delivered)
    assert lead_origins(portal) == Counter({i: 1 for i in lead_ids})
    commands = Counter(c for r in portal.state()["requests"] for c in r.get("commands", []))
    assert commands["crm.deal.add"] == 1  # later deals wait for the reset without calling
    now = datetime.now(UTC)
    for response in later_deals:
        row = await store.get(response.json()["id"])
        assert row is not None and row.status is Status.DELIVERING
        assert row.last_error_code == "OPERATION_TIME_LIMIT"
        assert row.next_attempt_at > now + timedelta(seconds=30)
    assert portal.records("deal") == []


# --------------------------------------------------------------------------- killed processes


def serve(
    tmp_path: Path, portal: Portal, port: int, log_name: str, **settings: str
) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("B24_")},
        "B24_WEBHOOK_URL": portal.webhook_url,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'killed.db'}",
        "UNKNOWN_OUTCOME_WAIT_SECONDS": "3",
        "RETRY_BASE_SECONDS": "0.05",
        "RETRY_MAX_DELAY_SECONDS": "0.3",
        "WORKER_POLL_SECONDS": "0.1",
        "WORKER_BATCH_SIZE": "20",
        "RATE_LIMIT_PER_IP": "0",
        **settings,
    }
    command = [console_script(), "serve", "--port", str(port)]
    with (tmp_path / log_name).open("wb") as log:
        return subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT
        )


def stopped_gracefully(proc: subprocess.Popen[bytes], log: Path) -> bool:
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the exit status is -15;
    the lifespan's last event tells a clean stop from a kill."""
    return proc.returncode in (0, -signal.SIGTERM) and "gateway.stopped" in log.read_text()


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("the gateway did not come up")


async def post_until_killed(
    url: str, count: int, proc: subprocess.Popen[bytes], kill_after: int
) -> set[str]:
    """Post `count` forms; SIGKILL the gateway after `kill_after` were acknowledged."""
    acked: set[str] = set()
    limit = asyncio.Semaphore(12)

    async def one(client: httpx.AsyncClient, i: int) -> None:
        async with limit:
            try:
                response = await client.post("/forms/contact", data={"phone": f"+1555600{i:04d}"})
            except httpx.HTTPError:
                return  # no answer: the browser would not count it as sent
            if response.status_code == 202:
                acked.add(response.json()["id"])
                if len(acked) == kill_after:
                    proc.send_signal(signal.SIGKILL)

    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        await asyncio.gather(*(one(client, i) for i in range(count)))
    return acked


@pytest.mark.slow
async def test_sigkill_under_load_then_restart_delivers_every_acknowledged_one_once(
    tmp_path: Path,
) -> None:
    portal = new_portal(rate_per_second=0)
    portal.faults(latency_ms=150)  # slow answers: the kill lands while batches are in flight
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        proc = serve(tmp_path, portal, port, "first.log")
        wait_up(url)
        acked = await post_until_killed(url, 500, proc, kill_after=250)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
        assert len(acked) >= 250
        delivered_before = set(lead_origins(portal))
        assert acked - delivered_before, "everything was delivered before the kill"

        proc = serve(tmp_path, portal, port, "second.log")
        wait_up(url)
        await wait_for(lambda: acked <= set(lead_origins(portal)), within=60, interval=0.2)
        origins = lead_origins(portal)
        assert [o for o, n in origins.items() if n > 1] == []
        assert acked <= set(origins)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert stopped_gracefully(proc, tmp_path / "second.log")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        portal.server.stop()


async def test_sigterm_finishes_in_flight_work_within_the_grace_period(tmp_path: Path) -> None:
    portal = new_portal(rate_per_second=0)
    portal.faults(latency_ms=1500)  # a batch is in flight when SIGTERM arrives
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(tmp_path, portal, port, "term.log")
    try:
        wait_up(url)
        ids = await post_many(url, [f"+1555700{i:04d}" for i in range(5)])
        await asyncio.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert stopped_gracefully(proc, tmp_path / "term.log")
        assert time.monotonic() - started < 15
        # The batch in flight was finished and recorded; nothing is left leased or doubled.
        delivered = lead_origins(portal)
        assert delivered and set(delivered) <= set(ids)
        assert all(n == 1 for n in delivered.values())
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'killed.db'}")
        store = Store(engine)
        rows = [await store.get(i) for i in ids]
        await engine.dispose()
        assert all(r is not None and r.lease_until is None for r in rows)
        assert {r.id for r in rows if r and r.status is Status.DELIVERED} == set(delivered)

        portal.faults(latency_ms=0)
        proc = serve(tmp_path, portal, port, "term2.log")
        wait_up(url)
        await wait_for(lambda: set(lead_origins(portal)) == set(ids), within=30)
        assert all(n == 1 for n in lead_origins(portal).values())
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        portal.server.stop()
