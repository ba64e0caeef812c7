"""Every connection of `b24-form-gateway serve` is held to time and size limits: headers and
bodies that come too slowly are cut off, oversized headers are refused before they pile up in
memory, and connections beyond the cap get a quick 503. The server runs as its own process, so
its memory can be measured, with short limits so the tests stay fast."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.httpserver import ConnectionLimits, LimitedHttpProtocol, limit_concurrency
from app.main import connection_limits, create_app
from app.settings import Settings, SettingsError
from tests.cli import Served, serving
from tests.conftest import gateway_settings
from tests.servers import RunningServer

HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.5
MAX_HEADER_BYTES = 16 * 1024
# How late a close may come after its deadline on a busy two-core machine.
SLACK = 1.5
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(
        tmp_path_factory.mktemp("limits"),
        HTTP_HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        HTTP_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT),
        HTTP_MAX_HEADER_BYTES=str(MAX_HEADER_BYTES),
        RATE_LIMIT_PER_IP="0",
        WORKER="false",
    ) as (served,):
        yield served


async def read_until_closed(reader: asyncio.StreamReader, *, within: float) -> bytes:
    """What the server sent before it closed the connection (a reset counts as closed)."""
    received = b""
    with contextlib.suppress(ConnectionError):
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                received += chunk
    return received


async def trickle(writer: asyncio.StreamWriter, piece: bytes, *, every: float) -> None:
    """Send `piece` every `every` seconds until the server stops taking it."""
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(every)


async def slow_client(port: int, head: bytes, piece: bytes) -> tuple[float, bytes]:
    """Send `head`, then trickle `piece`; seconds from connecting until the server closed, and
    what it answered."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    sender = asyncio.create_task(trickle(writer, piece, every=0.2))
    try:
        answer = await read_until_closed(reader, within=15)
        return time.monotonic() - started, answer
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


SLOW_HEADER = b"POST /forms/contact HTTP/1.1\r\nHost: gateway\r\n"
SLOW_BODY = (
    b"POST /forms/contact HTTP/1.1\r\nHost: gateway\r\n"
    b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nphone="
)


async def test_slow_headers_and_slow_bodies_are_cut_off_while_posts_keep_getting_202(
    gateway: Served,
) -> None:
    attack = [
        *(slow_client(gateway.port, SLOW_HEADER, b"X-Slow: 1\r\n") for _ in range(40)),
        *(slow_client(gateway.port, SLOW_BODY, b"5") for _ in range(10)),
    ]
    attacking = asyncio.gather(*attack)
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        while not attacking.done():
            sent = time.monotonic()
            response = await client.post("/forms/contact", data={"phone": "+15550001234"})
            latencies.append(time.monotonic() - sent)
            assert response.status_code == 202
            await asyncio.sleep(0.05)
    results = await attacking

    slow_headers, slow_bodies = results[:40], results[40:]
    for elapsed, answer in slow_headers:
        assert elapsed < HEADER_TIMEOUT + SLACK
        assert answer.startswith(b"HTTP/1.1 408 ")
    for elapsed, answer in slow_bodies:
        assert BODY_TIMEOUT <= elapsed < BODY_TIMEOUT + SLACK
        assert answer.startswith(b"HTTP/1.1 408 ")
    assert len(latencies) >= 10
    assert max(latencies) < 2.0
    # Cutting a body off is routine, not an error a person must look at.
    log = gateway.log_path.read_text()
    assert "http.body_timeout" in log
    assert " ERROR " not in log and "Traceback" not in log


async def test_the_next_request_on_a_kept_alive_connection_has_the_same_header_timeout(
    gateway: Served,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        await reader.readexactly(int(head.split(b"content-length: ")[1].split(b"\r\n")[0]))
        answered = time.monotonic()
        # The next request starts at once (so the idle keep-alive timeout never applies) and
        # then trickles its headers.
        writer.write(b"GET /healthz HTTP/1.1\r\n")
        sender = asyncio.create_task(trickle(writer, b"X-Slow: 1\r\n", every=0.2))
        answer = await read_until_closed(reader, within=15)
        sender.cancel()
    finally:
        writer.close()
    assert time.monotonic() - answered < HEADER_TIMEOUT + SLACK
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_a_body_trickled_on_after_its_answer_is_cut_off_too(gateway: Served) -> None:
    head = (
        b"POST /forms/contact HTTP/1.1\r\nHost: gateway\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 10000000\r\n\r\n"
    )
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(head + b"phone=" + b"5" * 100_000)  # over MAX_BODY_BYTES: answered at once
    sender = asyncio.create_task(trickle(writer, b"5", every=0.2))
    try:
        answer = await read_until_closed(reader, within=15)
    finally:
        sender.cancel()
        writer.close()
    assert time.monotonic() - started < BODY_TIMEOUT + SLACK
    # The one answer the request got, and no second one for the body that followed it.
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert answer.count(b"HTTP/1.1 ") == 1


async def send_header(port: int, total: int, *, terminated: bool) -> tuple[float, bytes]:
    """Send a request whose one header line is `total` bytes long (its end included when
    `terminated`); seconds until the server closed, and what it answered."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    filler = memoryview(b"a" * MIB)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Big: ")
            for _ in range(total // MIB):
                writer.write(filler)
                await writer.drain()
            if terminated:
                writer.write(b"\r\n\r\n")
                await writer.drain()

    sender = asyncio.create_task(send())
    try:
        answer = await read_until_closed(reader, within=20)
        return time.monotonic() - started, answer
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()


async def test_huge_headers_are_refused_early_and_memory_stays_bounded(gateway: Served) -> None:
    gateway.reset_peak_memory()
    before = gateway.status("VmRSS")
    results = await asyncio.gather(
        *(send_header(gateway.port, 32 * MIB, terminated=False) for _ in range(4)),
        *(send_header(gateway.port, 32 * MIB, terminated=True) for _ in range(4)),
    )
    growth_kb = gateway.status("VmHWM") - before
    for elapsed, answer in results:
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431 ")
        assert elapsed < 10
    assert any(answer.startswith(b"HTTP/1.1 431 ") for _, answer in results)
    # 8 x 32 MiB were offered; the server held at most its cap of each.
    assert growth_kb < 16 * 1024, f"the server grew by {growth_kb} kB"
    # It still serves.
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        assert (await client.get("/healthz")).status_code == 200


async def test_the_header_cap_counts_request_line_and_headers_but_not_the_body(
    gateway: Served,
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        # The default headers and request line take a few hundred bytes of the cap.
        under = await client.post(
            "/forms/contact",
            data={"phone": "+15550001234"},
            headers={"Cookie": "c=" + "x" * (MAX_HEADER_BYTES - 1024)},
        )
        assert under.status_code == 202
        big_body = await client.post(
            "/forms/contact", data={"phone": "+15550001234", "message": "m" * 9000}
        )
        assert big_body.status_code == 202
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: gateway\r\n"
    over = b"Cookie: c=" + b"x" * (MAX_HEADER_BYTES - len(head)) + b"\r\n\r\n"
    writer.write(head + over)
    answer = await read_until_closed(reader, within=10)
    writer.close()
    assert answer.startswith(b"HTTP/1.1 431 ")


async def test_connections_beyond_the_cap_get_a_quick_503(tmp_path: Path) -> None:
    settings = gateway_settings(None, tmp_path, WORKER=False)
    server = RunningServer(create_app(settings), limits=ConnectionLimits(max_connections=3))
    await asyncio.to_thread(server.start)
    idle: list[asyncio.StreamWriter] = []
    try:
        for _ in range(2):
            idle.append((await asyncio.open_connection("127.0.0.1", server.port))[1])
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            # Two open connections and this one: within the cap (the client keeps it open).
            assert (await client.get("/healthz")).status_code == 200
            # A fourth is refused at once, not queued.
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as fresh:
                sent = time.monotonic()
                refused = await fresh.post("/forms/contact", data={"phone": "+15550001234"})
                assert refused.status_code == 503
                assert time.monotonic() - sent < 1.0
            for writer in idle:
                writer.close()
            await asyncio.sleep(0.2)
            assert (await client.get("/healthz")).status_code == 200
    finally:
        for writer in idle:
            writer.close()
        await asyncio.to_thread(server.stop)


def test_the_limits_default_to_the_settings_defaults() -> None:
    assert connection_limits(Settings.load(_env_file=None)) == ConnectionLimits()


def test_the_uvicorn_options_in_the_readme_give_the_default_limits() -> None:
    # README: `uvicorn app.main:app --http app.httpserver:LimitedHttpProtocol
    # --limit-concurrency 501` runs with the defaults of `serve`.
    config = uvicorn.Config(
        "app.main:app", http="app.httpserver:LimitedHttpProtocol", limit_concurrency=501
    )
    config.load()
    assert config.http_protocol_class is LimitedHttpProtocol
    assert LimitedHttpProtocol.limits == ConnectionLimits()
    assert config.limit_concurrency == limit_concurrency(ConnectionLimits())


@pytest.mark.parametrize(
    "name", ["HTTP_HEADER_TIMEOUT_SECONDS", "HTTP_BODY_TIMEOUT_SECONDS", "HTTP_MAX_HEADER_BYTES"]
)
def test_a_limit_that_is_zero_stops_start_up_naming_it(name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.load(_env_file=None, **{name: 0})
