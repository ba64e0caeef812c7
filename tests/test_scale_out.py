"""Scale-out on PostgreSQL: several worker processes and API replicas on one database.

Runs when TEST_DATABASE_URL points at a PostgreSQL server (CI sets it). Every test counts
records per unique ORIGIN_ID: each submission delivered exactly once, none lost.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from app.store import Status, Store, create_engine
from tests.backlog import enqueue_leads
from tests.cli import console_script
from tests.conftest import PG_URL, Portal, fresh_postgres, new_portal, wait_for
from tests.servers import free_port

pytestmark = pytest.mark.skipif(PG_URL is None, reason="TEST_DATABASE_URL is not set")

CLI = console_script()


@pytest.fixture
async def pg_url() -> str:
    assert PG_URL is not None
    return await fresh_postgres(PG_URL)


def env_for(portal: Portal, db_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("B24_")}
    env.update(
        B24_WEBHOOK_URL=portal.webhook_url,
        DATABASE_URL=db_url,
        UNKNOWN_OUTCOME_WAIT_SECONDS="3",
        RETRY_BASE_SECONDS="0.05",
        RETRY_MAX_DELAY_SECONDS="0.3",
        WORKER_POLL_SECONDS="0.1",
        LOG_FORMAT="json",
        RATE_LIMIT_PER_IP="0",
        **extra,
    )
    return env


@contextmanager
def processes(
    commands: list[list[str]], env: dict[str, str], logs: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = []
    for n, command in enumerate(commands):
        with (logs / f"proc{n}.log").open("wb") as log:
            procs.append(
                subprocess.Popen(command, cwd=logs, env=env, stdout=log, stderr=subprocess.STDOUT)
            )
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def elected(logs: Path) -> list[int]:
    """The worker processes that were elected to deliver, by their log."""
    return [n for n in range(3) if "worker.elected" in (logs / f"proc{n}.log").read_text()]


def origins(portal: Portal) -> Counter[str]:
    return Counter(str(r["ORIGIN_ID"]) for r in portal.records("lead"))


async def all_delivered(db_url: str, expected: int) -> bool:
    engine = create_engine(db_url)
    try:
        return (await Store(engine).count_by_status())[Status.DELIVERED] == expected
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_three_workers_deliver_1000_once_within_one_portal_limit(
    pg_url: str, tmp_path: Path
) -> None:
    # A tight portal limit: three workers each pacing themselves to it would overflow it.
    portal = new_portal(rate_per_second=5, burst=10)
    try:
        ids = await enqueue_leads(pg_url, 1000)
        env = env_for(
            portal, pg_url, WORKER_BATCH_SIZE="20", BITRIX_RATE_PER_SECOND="5", BITRIX_BURST="10"
        )
        with processes([[CLI, "worker"]] * 3, env, tmp_path):
            await wait_for(lambda: all_delivered(pg_url, 1000), within=90, interval=0.5)
        counts = portal.state()["counts"]
        assert counts.get("rejected_rate_limit", 0) == 0
        assert origins(portal) == Counter({i: 1 for i in ids})
        logs = [(tmp_path / f"proc{n}.log").read_text() for n in range(3)]
        assert sum("worker.elected" in log for log in logs) == 1
        assert sum("worker.standing_by" in log for log in logs) == 2
    finally:
        portal.server.stop()


@pytest.mark.slow
async def test_kill_9_of_the_delivering_worker_mid_batch_loses_and_doubles_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    portal = new_portal(rate_per_second=0)
    portal.faults(latency_ms=400)  # batches are in flight most of the time
    try:
        ids = await enqueue_leads(pg_url, 300)
        env = env_for(portal, pg_url, WORKER_BATCH_SIZE="20")
        with processes([[CLI, "worker"]] * 3, env, tmp_path) as procs:
            await wait_for(lambda: len(origins(portal)) >= 40, within=60)
            [leader] = elected(tmp_path)
            procs[leader].send_signal(signal.SIGKILL)
            procs[leader].wait(timeout=10)
            assert len(origins(portal)) < 300, "all delivered before the kill"
            await wait_for(lambda: all_delivered(pg_url, 300), within=90, interval=0.5)
        counts = origins(portal)
        assert [o for o, n in counts.items() if n > 1] == []
        assert set(counts) == set(ids)
        assert len(elected(tmp_path)) == 2  # a standby took over
    finally:
        portal.server.stop()


@pytest.mark.slow
async def test_a_take_over_under_the_portal_limit_costs_no_query_limit_exceeded(
    pg_url: str, tmp_path: Path
) -> None:
    """The new delivering worker cannot know what its predecessor sent: it starts as if the
    portal's bucket were full and sends at the drain rate, so the take-over is not refused."""
    portal = new_portal(rate_per_second=5, burst=10)
    try:
        ids = await enqueue_leads(pg_url, 400)
        env = env_for(
            portal, pg_url, WORKER_BATCH_SIZE="10", BITRIX_RATE_PER_SECOND="5", BITRIX_BURST="10"
        )
        with processes([[CLI, "worker"]] * 2, env, tmp_path) as procs:
            await wait_for(lambda: len(origins(portal)) >= 100, within=60)  # bucket in use
            [leader] = [n for n in range(2) if "worker.elected" in _log(tmp_path, n)]
            procs[leader].send_signal(signal.SIGKILL)
            procs[leader].wait(timeout=10)
            await wait_for(lambda: all_delivered(pg_url, 400), within=90, interval=0.5)
        assert portal.state()["counts"].get("rejected_rate_limit", 0) == 0
        counts = origins(portal)
        assert [o for o, n in counts.items() if n > 1] == [] and set(counts) == set(ids)
        assert all("worker.elected" in _log(tmp_path, n) for n in range(2))  # it took over
    finally:
        portal.server.stop()


def _log(logs: Path, n: int) -> str:
    return (logs / f"proc{n}.log").read_text()


@pytest.mark.slow
async def test_two_api_replicas_accept_2000_concurrent_submissions_without_loss(
    pg_url: str, tmp_path: Path
) -> None:
    portal = new_portal()
    ports = [free_port(), free_port()]
    env = env_for(portal, pg_url, WORKER="false")
    commands = [[CLI, "serve", "--port", str(port)] for port in ports]
    try:
        with processes(commands, env, tmp_path):
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            for url in urls:
                await _wait_up(url)
            limit = asyncio.Semaphore(32)

            async def post(client: httpx.AsyncClient, i: int) -> str:
                async with limit:
                    response = await client.post(
                        f"{urls[i % 2]}/forms/contact", data={"phone": f"+1555800{i:04d}"}
                    )
                assert response.status_code == 202, response.text
                return str(response.json()["id"])

            async with httpx.AsyncClient(timeout=30) as client:
                ids = await asyncio.gather(*(post(client, i) for i in range(2000)))
        assert len(set(ids)) == 2000
        engine = create_engine(pg_url)
        store = Store(engine)
        page = await store.search(limit=1)
        counts = await store.count_by_status()
        await engine.dispose()
        assert page.total == 2000 and counts[Status.ACCEPTED] == 2000
        assert portal.state()["requests"] == []  # API-only replicas never call the portal
    finally:
        portal.server.stop()


async def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 60
    async with httpx.AsyncClient() as client:
        while True:
            try:
                if (await client.get(url + "/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "a replica did not start"
            await asyncio.sleep(0.1)


async def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    from app.store import migrate

    engines = [create_engine(pg_url) for _ in range(4)]
    try:
        await asyncio.gather(*(migrate(engine) for engine in engines))
    finally:
        for engine in engines:
            await engine.dispose()
    engine = create_engine(pg_url)
    assert (await Store(engine).search()).total == 0
    await engine.dispose()
