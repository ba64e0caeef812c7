"""The per-client limit shared by replicas through Redis (RATE_LIMIT_STORAGE_URL), over real
HTTP: two gateways count one client once. With Redis away, each process goes on counting alone,
says so once in the log, counts those checks in a metric, and shares again once Redis is back.
The sharing tests need a Redis server at 127.0.0.1:6379 and are skipped without one."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from app.intake.ratelimit import SHARED_RETRY_SECONDS
from tests.conftest import Gateway, Portal
from tests.servers import free_port

MakeGateway = Callable[..., Awaitable[Gateway]]
REDIS_URL = "redis://127.0.0.1:6379/0"
PHONE = {"phone": "+15550001111"}


def redis_listening() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5):
            return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not redis_listening(), reason="no Redis at 127.0.0.1:6379")


def a_client() -> str:
    """An address no other run has counted yet in the shared Redis (other suites may use it)."""
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


async def post(gateway: Gateway, client_ip: str) -> httpx.Response:
    async with gateway.client() as client:
        return await client.post(
            "/forms/contact", data=PHONE, headers={"X-Forwarded-For": client_ip}
        )


@needs_redis
async def test_replicas_sharing_redis_count_a_client_once(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    shared = {
        "RATE_LIMIT_PER_IP": "3/minute",
        "RATE_LIMIT_STORAGE_URL": REDIS_URL,
        "TRUSTED_PROXIES": "127.0.0.1",
    }
    first = await make_gateway(portal, **shared)
    second = await make_gateway(
        portal, DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'second.db'}", **shared
    )
    client_ip = a_client()
    statuses = [(await post(gw, client_ip)).status_code for gw in (first, second, first)]
    assert statuses == [202, 202, 202]
    for gateway in (second, first):
        limited = await post(gateway, client_ip)
        assert limited.status_code == 429
        assert 19 <= int(limited.headers["retry-after"]) <= 20  # one slot every 60/3 s
    assert (await post(second, a_client())).status_code == 202  # another client
    async with first.client() as client:
        metrics = (await client.get("/metrics")).text
    assert "gateway_rate_limit_fallback_total 0.0" in metrics


async def test_with_redis_away_each_process_limits_alone_and_says_so(
    portal: Portal, make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    nobody = f"redis://:hush-redis-pw@127.0.0.1:{free_port()}/0"  # nothing listens there
    gateway = await make_gateway(
        portal,
        RATE_LIMIT_PER_IP="3/minute",
        RATE_LIMIT_STORAGE_URL=nobody,
        TRUSTED_PROXIES="127.0.0.1",
    )
    client_ip = a_client()
    with caplog.at_level(logging.INFO, logger="app.intake"):
        statuses = [(await post(gateway, client_ip)).status_code for _ in range(4)]
    assert statuses == [202, 202, 202, 429]
    warnings = [
        r for r in caplog.records if r.getMessage() == "intake.rate_limit_shared_unavailable"
    ]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert all("hush-redis-pw" not in r.getMessage() + str(r.__dict__) for r in caplog.records)
    async with gateway.client() as client:
        metrics = (await client.get("/metrics")).text
    assert "gateway_rate_limit_fallback_total 4.0" in metrics


class Relay:
    """A TCP relay to the real Redis that the test can take away and bring back."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


@needs_redis
async def test_when_redis_comes_back_the_counts_are_shared_again(
    portal: Portal, make_gateway: MakeGateway, caplog: pytest.LogCaptureFixture
) -> None:
    relay = Relay()
    await relay.start()
    gateway = await make_gateway(
        portal,
        RATE_LIMIT_PER_IP="3/minute",
        RATE_LIMIT_STORAGE_URL=f"redis://127.0.0.1:{relay.port}/0",
        TRUSTED_PROXIES="127.0.0.1",
    )
    client_ip = a_client()
    with caplog.at_level(logging.INFO, logger="app.intake"):
        assert (await post(gateway, client_ip)).status_code == 202  # counted in Redis
        await relay.stop()
        assert (await post(gateway, client_ip)).status_code == 202  # counted here alone
        await relay.start()
        await asyncio.sleep(SHARED_RETRY_SECONDS + 0.2)
        # Redis still holds the first post: two more, then refused.
        statuses = [(await post(gateway, client_ip)).status_code for _ in range(3)]
    assert statuses == [202, 202, 429]
    events = [r.getMessage() for r in caplog.records if "rate_limit_shared" in r.getMessage()]
    assert events == ["intake.rate_limit_shared_unavailable", "intake.rate_limit_shared_restored"]
    async with gateway.client() as client:
        metrics = (await client.get("/metrics")).text
    assert "gateway_rate_limit_fallback_total 1.0" in metrics
    await relay.stop()
