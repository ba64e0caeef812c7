"""The per-client limit's memory and cost, in process (no server): 1,000,000 distinct clients
against the bounded table (`RATE_LIMIT_MAX_CLIENTS`, default 100,000): the table's size, the
Python heap it holds (tracemalloc) and the process's RSS growth; the cost of one check with 10
clients (at 30/minute mostly refusals) and with 1,000,000 (every one a new client, admitted, and
once the table is full each evicts the least recently seen). For contrast, the limiter it
replaced (`limits`' moving window in MemoryStorage) on `--previous` distinct clients; with Redis
at `--redis-url`, the cost of a shared check.

    python -m bench.limiter [--clients 1000000] [--max-clients 100000] [--previous 100000]
                            [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import time
import tracemalloc
from urllib.parse import urlsplit

from pydantic import SecretStr

from app.intake.ratelimit import RateLimit

RATE = "30/minute"  # RATE_LIMIT_PER_IP's default
MiB = 1024 * 1024


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def client(n: int) -> str:
    """A distinct client key as the intake makes them (an IPv6 /64)."""
    return f"2001:db8:{n >> 16:x}:{n & 0xFFFF:x}::/64"


async def per_check_us(limit: RateLimit, keys: list[str], checks: int) -> float:
    hit, count = limit.hit, len(keys)
    started = time.perf_counter()
    for i in range(checks):
        await hit("contact", keys[i % count])
    return round((time.perf_counter() - started) / checks * 1e6, 3)


async def bounded(clients: int, max_clients: int) -> dict[str, object]:
    keys = [client(n) for n in range(clients)]
    few = RateLimit(RATE, max_clients=max_clients)
    at_10 = await per_check_us(few, keys[:10], clients)

    gc.collect()
    rss_before = rss_bytes()
    many = RateLimit(RATE, max_clients=max_clients)
    at_all = await per_check_us(many, keys, clients)
    gc.collect()
    rss_growth = rss_bytes() - rss_before
    kept = len(many.local)
    del many
    gc.collect()

    # The heap the table holds, measured apart (tracemalloc slows every allocation), once the
    # table is full and evicting: from there on it no longer grows.
    traced_clients = min(clients, 2 * max_clients)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    traced = RateLimit(RATE, max_clients=max_clients)
    for key in keys[:traced_clients]:
        await traced.hit("contact", key)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return {
        "clients": clients,
        "max_clients": max_clients,
        "kept": kept,
        "heap_held_mib": round(held / MiB, 1),
        "heap_measured_after_clients": traced_clients,
        "heap_per_kept_client_bytes": round(held / len(traced.local)),
        "rss_growth_mib": round(rss_growth / MiB, 1),
        "per_check_us_10_clients": at_10,
        "per_check_us_all_distinct": at_all,
    }


def previous(clients: int) -> dict[str, object]:
    """The limiter before: `limits`' moving window in MemoryStorage, which keeps every key."""
    from limits import parse
    from limits.storage import MemoryStorage
    from limits.strategies import MovingWindowRateLimiter

    item = parse(RATE)
    storage = MemoryStorage()
    limiter = MovingWindowRateLimiter(storage)
    keys = [client(n) for n in range(clients)]
    gc.collect()
    rss_before = rss_bytes()
    started = time.perf_counter()
    for key in keys:
        limiter.hit(item, "contact", key)
    seconds = time.perf_counter() - started
    gc.collect()
    rss_growth = rss_bytes() - rss_before
    started = time.perf_counter()
    storage._MemoryStorage__expire_events()  # type: ignore[attr-defined]  # its timer's walk
    expiry = time.perf_counter() - started
    storage.reset()
    return {
        "clients": clients,
        "rss_growth_mib": round(rss_growth / MiB, 1),
        # Its timer thread walks every key every 10 ms meanwhile, holding the GIL.
        "per_check_us": round(seconds / clients * 1e6, 3),
        "expiry_pass_s": round(expiry, 3),
    }


def redis_reachable(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "", parts.port or 6379), timeout=0.5):
            return True
    except OSError:
        return False


async def shared(url: str, checks: int) -> dict[str, object]:
    limit = RateLimit(RATE, max_clients=100, storage_url=SecretStr(url))
    prefix = f"bench-{os.getpid()}-{time.time_ns()}"  # keys of no earlier run
    try:
        at_10 = await per_check_us(limit, [f"{prefix}-{n}" for n in range(10)], checks)
        distinct = await per_check_us(limit, [f"{prefix}-new-{n}" for n in range(checks)], checks)
    finally:
        await limit.aclose()
    return {
        "checks": checks,
        "per_check_us_10_clients": at_10,
        "per_check_us_distinct_clients": distinct,
        "clients_counted_locally": len(limit.local),  # > 0: Redis failed meanwhile
    }


def run(
    clients: int = 1_000_000,
    max_clients: int = 100_000,
    previous_clients: int = 100_000,
    redis_url: str | None = None,
) -> dict[str, object]:
    result: dict[str, object] = {
        "rate": RATE,
        "bounded": asyncio.run(bounded(clients, max_clients)),
    }
    if previous_clients:
        result["previous"] = previous(previous_clients)
    if redis_url and redis_reachable(redis_url):
        result["redis"] = asyncio.run(shared(redis_url, 20_000))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="the per-client limit: memory and cost")
    parser.add_argument("--clients", type=int, default=1_000_000)
    parser.add_argument("--max-clients", type=int, default=100_000)
    parser.add_argument("--previous", type=int, default=100_000, help="0 skips it")
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    result = run(args.clients, args.max_clients, args.previous, args.redis_url)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
