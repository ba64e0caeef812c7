"""Drain benchmark: a backlog of queued leads (or deal packages) against the emulator's limit.

    python -m bench.drain [--leads 10000] [--rate 2] [--burst 50]
    python -m bench.drain --entity deal [--leads 3000]

Reports submissions/s in the steady state (after the portal's burst is spent) against the
ceiling the limit allows, portal requests per submission, and 503s. A lead is one command, so
the ceiling is rate x 50 leads. A deal package (contact found or created, company, deal, one
trace) is two look-ups (findbycomm by phone and email) and four creates: six commands, so the
ceiling is rate x 50 / 6 packages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from app.forms import Entity, Form, map_submission
from app.main import create_app
from app.sandbox import Emulator, EmulatorConfig, create_emulator_app
from app.settings import Settings
from app.store import NewSubmission, Status, Store, create_engine, migrate
from tests.servers import RunningServer

LEADS_PER_CALL = 50


COMMANDS = {"lead": 1, "deal": 6}


async def enqueue(db_url: str, count: int, entity: str) -> None:
    engine = create_engine(db_url)
    await migrate(engine)
    store = Store(engine)
    form = Form(id="contact") if entity == "lead" else Form(id="order", entity=Entity.DEAL)
    now = datetime.now(UTC)
    trace = '{"url":"https://shop.example/","tags":{"list":{"utm_source":"google"}}}'

    async def one(i: int) -> None:
        fields = {
            "phone": [f"+1555{i:07d}"],
            "email": [f"buyer{i}@example.com"],
            "name": [f"Buyer {i}"],
            "company": [f"Company {i}"],
        }
        await store.enqueue(
            NewSubmission(
                id=f"bench-{i:06d}",
                form_id=form.id,
                entity=entity,
                fields=fields,
                crm=map_submission(form, fields, trace_utm={"utm_source": "google"}),
                body_hash=str(i),
                trace=trace,
            ),
            now=now,
        )

    # Concurrent enqueues share commits (the store's group commit): a fast backlog set-up.
    for start in range(0, count, 200):
        await asyncio.gather(*(one(i) for i in range(start, min(start + 200, count))))
    await engine.dispose()


async def delivered(store: Store) -> int:
    return (await store.count_by_status())[Status.DELIVERED]


async def run(leads: int, rate: float, burst: int, entity: str) -> dict[str, object]:
    config = EmulatorConfig(secret="bench-code", rate_per_second=rate, burst=burst)  # noqa: S106
    emulator = Emulator(config)
    portal = RunningServer(create_emulator_app(emulator))
    portal.start()
    workdir = Path(tempfile.mkdtemp(prefix="b24-bench-"))
    db_url = f"sqlite+aiosqlite:///{workdir / 'drain.db'}"
    await enqueue(db_url, leads, entity)
    settings = Settings.load(
        B24_WEBHOOK_URL=f"{portal.url}/rest/1/bench-code/",
        DATABASE_URL=db_url,
        BITRIX_RATE_PER_SECOND=rate,
        BITRIX_BURST=burst,
        WORKER_POLL_SECONDS=0.05,
        LOG_LEVEL="WARNING",
        _env_file=None,
    )
    started = time.monotonic()
    gateway = RunningServer(create_app(settings))
    await asyncio.to_thread(gateway.start)
    store = Store(create_engine(db_url))
    while await delivered(store) < leads:  # noqa: ASYNC110 - polling another process's work
        await asyncio.sleep(0.1)
    elapsed = time.monotonic() - started
    state = emulator.snapshot()
    await asyncio.to_thread(gateway.stop)
    portal.stop()
    await store.engine.dispose()

    requests = [r for r in state["requests"] if r["method"] == "batch"]  # type: ignore[union-attr, index]
    times = sorted(float(r["at"]) for r in requests)
    commands = [len(r["commands"]) for r in requests]
    counts = state["counts"]  # type: ignore[index]
    # Steady state: the last third of the calls, by when the portal's bucket has filled and
    # only its drain rate paces the gateway (a long enough backlog saturates it).
    steady = {}
    tail = len(times) // 3
    if tail >= 5:
        window = times[-1] - times[-tail - 1]
        per_submission = COMMANDS[entity]
        steady_done = sum(commands[-tail:]) / per_submission
        ceiling = rate * LEADS_PER_CALL / per_submission
        steady = {
            "steady_per_s": round(steady_done / window, 1),
            "ceiling_per_s": round(ceiling, 1),
            "steady_ratio": round(steady_done / window / ceiling, 3),
        }
    return {
        "entity": entity,
        "submissions": leads,
        "portal_limit": f"{rate}/s burst {burst}",
        "seconds": round(elapsed, 1),
        "per_s_overall": round(leads / elapsed, 1),
        **steady,
        "portal_requests": len(requests) + counts.get("rejected_rate_limit", 0),  # type: ignore[union-attr]
        "requests_per_submission": round(len(requests) / leads, 4),
        "query_limit_exceeded": counts.get("rejected_rate_limit", 0),  # type: ignore[union-attr]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--leads", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--entity", choices=sorted(COMMANDS), default="lead")
    args = parser.parse_args()
    result = asyncio.run(run(args.leads, args.rate, args.burst, args.entity))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
