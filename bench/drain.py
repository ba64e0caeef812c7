"""Drain benchmark: a backlog of queued leads (or deal packages) against the emulator's limit.

    python -m bench.drain [--leads 10000] [--rate 2] [--burst 50]
    python -m bench.drain --entity deal [--leads 3000]
    python -m bench.drain --after-outage [--leads 1000] [--entity lead|deal] [--outage-seconds 20]

Clean start: the gateway meets a backlog and a portal whose bucket is empty. Reports
submissions/s in the steady state (after the portal's burst is spent) against the ceiling the
limit allows, portal requests per submission, and 503s.

After an outage (`--after-outage`): the portal answers every call with a 503 HTML page while
the gateway tries the backlog for `--outage-seconds`, so every submission carries real attempts
and a backoff (`next_attempt_at`) of the retry policy (defaults: base 5 s, delays capped at
15 min); then the portal comes back with its request bucket already full (its steady state
when other integrations share it). Measured from that moment: submissions/s from the first to
the last delivery, QUERY_LIMIT_EXCEEDED answers, portal requests per submission, the time to
the first delivery, and nothing lost or duplicated (records per ORIGIN_ID in the emulator).

A lead is one command, so the ceiling is rate x 50 leads. A deal package is five commands
(company add, contact add, deal add, crm.deal.update setting the deal's company, the trace add)
plus its share of the look-ups: one findbycomm by phone and one by e-mail ask for 20 packages
at once, 0.1 a package. So the ceiling is rate x 50 / 5.1 packages.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from app.bitrix import Unavailable
from app.delivery.retry import RetryPolicy
from app.forms import Entity, Form, map_submission
from app.main import create_app
from app.sandbox import Emulator, EmulatorConfig, create_emulator_app
from app.settings import Settings
from app.store import NewSubmission, Status, Store, create_engine, migrate
from app.store.tables import submissions
from tests.servers import RunningServer

LEADS_PER_CALL = 50
COMMANDS = {"lead": 1.0, "deal": 5.1}
# The records a submission makes, by entity type, and the ORIGIN_ID suffix each carries.
ROLES = {"lead": {"lead": ""}, "deal": {"deal": "", "contact": ":contact", "company": ":company"}}
RETRY_BASE_SECONDS = 5.0  # the gateway's defaults, written out: the backoff is what is measured
RETRY_MAX_DELAY_SECONDS = 900.0
# Goals after an outage. Requests per submission: 0.03 per lead (1.5 x the 0.02 of full
# batches), scaled by commands per package for deals.
GOAL_RATIO = 0.9
GOAL_QUERY_LIMIT_EXCEEDED = 1
GOAL_REQUESTS_PER_COMMAND = 0.03
GOAL_FIRST_DELIVERY_SECONDS = 2.0


def submission_id(i: int) -> str:
    return f"bench-{i:06d}"


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
                id=submission_id(i),
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


def start_portal(rate: float, burst: int) -> tuple[Emulator, RunningServer]:
    config = EmulatorConfig(secret="bench-code", rate_per_second=rate, burst=burst)  # noqa: S106
    emulator = Emulator(config)
    portal = RunningServer(create_emulator_app(emulator))
    portal.start()
    return emulator, portal


def gateway_settings(
    portal: RunningServer, db_url: str, rate: float, burst: int, log_level: str = "WARNING"
) -> Settings:
    return Settings.load(
        B24_WEBHOOK_URL=f"{portal.url}/rest/1/bench-code/",
        DATABASE_URL=db_url,
        BITRIX_RATE_PER_SECOND=rate,
        BITRIX_BURST=burst,
        WORKER_POLL_SECONDS=0.05,
        RETRY_BASE_SECONDS=RETRY_BASE_SECONDS,
        RETRY_MAX_DELAY_SECONDS=RETRY_MAX_DELAY_SECONDS,
        LOG_LEVEL=log_level,
        _env_file=None,
    )


def new_db_url() -> str:
    workdir = Path(tempfile.mkdtemp(prefix="b24-bench-"))
    return f"sqlite+aiosqlite:///{workdir / 'drain.db'}"


async def wait_delivered(store: Store, count: int, limit_seconds: float) -> bool:
    """Until every submission is delivered (True), none is left to try, or `limit_seconds`
    pass (False)."""
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        by_status = await store.count_by_status()
        if by_status[Status.DELIVERED] >= count:
            return True
        if by_status[Status.DELIVERED] + by_status[Status.FAILED] >= count:
            return False
        await asyncio.sleep(0.1)
    return False


async def deliveries(engine: AsyncEngine) -> dict[str, float]:
    """Submission id -> when it was recorded delivered (wall clock)."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(submissions.c.id, submissions.c.delivered_at).where(
                submissions.c.status == Status.DELIVERED
            )
        )
        return {row.id: row.delivered_at.timestamp() for row in rows if row.delivered_at}


async def backlog_state(engine: AsyncEngine, now: datetime) -> dict[str, object]:
    """What the outage left: statuses, attempts, last error codes, and how far ahead the
    retry policy put each undelivered submission's next attempt."""
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(
                    submissions.c.status,
                    submissions.c.attempts,
                    submissions.c.last_error_code,
                    submissions.c.next_attempt_at,
                )
            )
        ).all()
    waiting = [r for r in rows if r.status != Status.DELIVERED]
    ahead = [(r.next_attempt_at - now).total_seconds() for r in waiting]
    attempts = [int(r.attempts) for r in rows]
    return {
        "status": dict(Counter(str(r.status) for r in rows)),
        "attempts": _spread(attempts, 0),
        "never_tried": sum(1 for a in attempts if a == 0),
        "last_error_code": dict(Counter(str(r.last_error_code) for r in rows)),
        "next_attempt_in_s": _spread(ahead, 1),
        "due_within_2s": sum(1 for s in ahead if s <= 2.0),
    }


def _spread(values: Sequence[float], digits: int) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "min": round(ordered[0], digits),
        "median": round(statistics.median(ordered), digits),
        "p90": round(ordered[int(0.9 * (len(ordered) - 1))], digits),
        "max": round(ordered[-1], digits),
    }


def exactly_once(
    state: Mapping[str, Any], entity: str, count: int, delivered: Collection[str]
) -> dict[str, Any]:
    """Records per ORIGIN_ID in the emulator: each submission's records once, none twice.

    Lost: a record missing although the gateway marked its submission delivered (a submission
    still waiting when the run stopped is counted undelivered, not lost). Duplicated: a record
    made more than once."""
    records = state["records"]
    lost = duplicated = 0
    per_type = {}
    for kind, suffix in ROLES[entity].items():
        seen = Counter(str(r.get("ORIGIN_ID")) for r in records[kind])
        ids = [submission_id(i) for i in range(count)]
        missing = sum(1 for sid in ids if seen[sid + suffix] == 0 and sid in delivered)
        twice = sum(1 for sid in ids if seen[sid + suffix] > 1)
        per_type[kind] = {"records": len(records[kind]), "missing": missing, "duplicated": twice}
        lost += missing
        duplicated += twice
    return {"lost": lost, "duplicated": duplicated, "records": per_type}


def rate_figures(times: Sequence[float], entity: str, rate: float) -> dict[str, object]:
    """Submissions/s from the first delivery to the last: those delivered after the first
    moment over the seconds between (the first batch's submissions share one moment)."""
    ceiling = rate * LEADS_PER_CALL / COMMANDS[entity]
    out: dict[str, object] = {"ceiling_per_s": round(ceiling, 1)}
    if len(times) < 2 or times[-1] <= times[0]:
        return {**out, "per_s_first_to_last": None, "ratio_first_to_last": None}
    after_first = sum(1 for t in times if t > times[0])
    per_s = after_first / (times[-1] - times[0])
    return {
        **out,
        "per_s_first_to_last": round(per_s, 1),
        "ratio_first_to_last": round(per_s / ceiling, 3),
    }


async def seed_tries(engine: AsyncEngine, count: int, since: datetime, seconds: float) -> None:
    """Write into the backlog the tries a worker without a portal breaker makes during an
    outage of `seconds` from `since`: each submission tried at once, then again whenever the
    retry policy (the gateway's, with its default settings) makes it due within the outage,
    each try answered with a 503 page. What is left: attempts >= 1, status delivering, last
    error Unavailable, and the next attempt where the last backoff put it, seconds to minutes
    after the outage. (The gateway's own 2 requests/s would space the tries a little more.)"""
    policy = RetryPolicy(base_seconds=RETRY_BASE_SECONDS, max_delay_seconds=RETRY_MAX_DELAY_SECONDS)
    error = Unavailable("HTTP 503", code="Unavailable", http_status=503)
    rng = random.Random(20)  # repeatable jitter
    rows = []
    for i in range(count):
        now = since + timedelta(seconds=rng.uniform(0, 1))  # the first tries, within a second
        attempts = 0
        while True:
            attempts += 1
            due = policy.next_attempt(error, attempts=attempts, accepted_at=since, now=now, rng=rng)
            assert due is not None  # a 503 is retried for days
            if due > since + timedelta(seconds=seconds):
                break
            now = due
        rows.append({"sid": submission_id(i), "tries": attempts, "due": due, "at": now})
    statement = (
        update(submissions)
        .where(submissions.c.id == bindparam("sid"))
        .values(
            status=Status.DELIVERING.value,
            attempts=bindparam("tries"),
            next_attempt_at=bindparam("due"),
            updated_at=bindparam("at"),
            last_error_code="Unavailable",
            last_error="HTTP 503: 503 Service Temporarily Unavailable (nginx)",
        )
    )
    async with engine.begin() as conn:
        await conn.execute(statement, rows)


async def finish(
    emulator: Emulator, portal: RunningServer, gateway: RunningServer, store: Store
) -> tuple[dict[str, Any], dict[str, float]]:
    """Stop the gateway and the portal; the portal's state and when each was delivered."""
    state: dict[str, Any] = emulator.snapshot()
    await asyncio.to_thread(gateway.stop)
    portal.stop()
    done = await deliveries(store.engine)
    await store.engine.dispose()
    return state, done


async def run(
    leads: int, rate: float, burst: int, entity: str, limit_seconds: float = 900.0
) -> dict[str, object]:
    """Clean start: the backlog, then the gateway, against a portal whose bucket is empty."""
    emulator, portal = start_portal(rate, burst)
    db_url = new_db_url()
    await enqueue(db_url, leads, entity)
    settings = gateway_settings(portal, db_url, rate, burst)
    started = time.monotonic()
    started_wall = time.time()
    gateway = RunningServer(create_app(settings))
    await asyncio.to_thread(gateway.start)
    store = Store(create_engine(db_url))
    finished = await wait_delivered(store, leads, limit_seconds)
    elapsed = time.monotonic() - started
    state, done = await finish(emulator, portal, gateway, store)
    times = sorted(done.values())

    requests = [r for r in state["requests"] if r["method"] == "batch"]
    times_called = sorted(float(r["at"]) for r in requests)
    commands = [len(r["commands"]) for r in requests]
    counts = state["counts"]
    # Steady state: the last third of the calls, by when the portal's bucket has filled and
    # only its drain rate paces the gateway (a long enough backlog saturates it).
    steady = {}
    tail = len(times_called) // 3
    if tail >= 5:
        window = times_called[-1] - times_called[-tail - 1]
        per_submission = COMMANDS[entity]
        steady_done = sum(commands[-tail:]) / per_submission
        ceiling = rate * LEADS_PER_CALL / per_submission
        steady = {
            "steady_per_s": round(steady_done / window, 1),
            "ceiling_per_s": round(ceiling, 1),
            "steady_ratio": round(steady_done / window / ceiling, 3),
        }
    once = exactly_once(state, entity, leads, done)
    return {
        "case": "clean start",
        "entity": entity,
        "submissions": leads,
        "portal_limit": f"{rate}/s burst {burst}",
        "all_delivered": finished,
        "delivered": len(times),
        "seconds": round(elapsed, 1),
        "per_s_overall": round(leads / elapsed, 1),
        **steady,
        # From the first delivery to the last, the portal's burst included.
        **rate_figures(times, entity, rate),
        "first_delivery_s": round(times[0] - started_wall, 2) if times else None,
        "portal_requests": len(requests) + counts.get("rejected_rate_limit", 0),
        "requests_per_submission": round(len(requests) / leads, 4),
        "query_limit_exceeded": counts.get("rejected_rate_limit", 0),
        "lost": once["lost"],
        "duplicated": once["duplicated"],
    }


async def run_after_outage(
    leads: int,
    rate: float,
    burst: int,
    entity: str,
    outage_seconds: float,
    limit_seconds: float = 300.0,
    backlog: str = "tried",
) -> dict[str, object]:
    """The backlog tried through an outage, then a portal back with its bucket full.

    `backlog`: "tried" writes the tries of a worker without a breaker into the store when the
    outage starts (`seed_tries`), then the gateway runs through the outage too; "gateway"
    leaves the backlog to what the gateway itself does during the outage.
    """
    emulator, portal = start_portal(rate, burst)
    emulator.update_faults({"outage": True})  # every REST call: a 503 HTML page
    db_url = new_db_url()
    await enqueue(db_url, leads, entity)
    store = Store(create_engine(db_url))
    outage_from = datetime.now(UTC)
    if backlog == "tried":
        await seed_tries(store.engine, leads, outage_from, outage_seconds)
    # ERROR: the retries and breaker warnings of an outage are expected here.
    settings = gateway_settings(portal, db_url, rate, burst, log_level="ERROR")
    gateway = RunningServer(create_app(settings))
    await asyncio.to_thread(gateway.start)
    # The gateway tries what is due and backs off (or waits on its breaker).
    left = outage_seconds - (datetime.now(UTC) - outage_from).total_seconds()
    await asyncio.sleep(max(0.0, left))

    at_back = await backlog_state(store.engine, datetime.now(UTC))
    emulator.fill_bucket()  # other integrations kept the portal's bucket full
    back_at = time.time()
    emulator.update_faults({"outage": False})
    finished = await wait_delivered(store, leads, limit_seconds)
    drained_s = time.time() - back_at
    state, done = await finish(emulator, portal, gateway, store)
    times = sorted(done.values())

    log: list[dict[str, Any]] = state["requests"]
    during = [r for r in log if r.get("fault") == "outage"]
    after = [r for r in log if float(r["at"]) >= back_at and r.get("fault") != "outage"]
    limited = [r for r in after if r.get("error") == "QUERY_LIMIT_EXCEEDED"]
    answered = [r for r in after if r.get("status") == 200]
    once = exactly_once(state, entity, leads, done)
    figures = rate_figures(times, entity, rate)
    first_delivery = round(times[0] - back_at, 2) if times else None
    per_submission = round(len(after) / leads, 4)
    goal_requests = round(GOAL_REQUESTS_PER_COMMAND * COMMANDS[entity], 3)
    ratio = figures["ratio_first_to_last"]
    return {
        "case": "after outage",
        "backlog": backlog,
        "entity": entity,
        "submissions": leads,
        "portal_limit": f"{rate}/s burst {burst}, full when the portal comes back",
        "outage_s": outage_seconds,
        "outage_503s": len(during),
        "at_portal_back": at_back,
        "all_delivered": finished,
        "delivered": len(times),
        "undelivered": leads - len(times),
        "seconds_to_drain": round(drained_s, 1),
        **figures,
        "first_delivery_s": first_delivery,
        "first_request_s": round(float(after[0]["at"]) - back_at, 2) if after else None,
        "portal_requests": len(after),
        "batch_requests_answered": sum(1 for r in answered if r["method"] == "batch"),
        "requests_per_submission": per_submission,
        "query_limit_exceeded": len(limited),
        "other_errors": dict(
            Counter(str(r.get("error") or r.get("status")) for r in after if r["status"] != 200)
            - Counter({"QUERY_LIMIT_EXCEEDED": len(limited)})
        ),
        "lost": once["lost"],
        "duplicated": once["duplicated"],
        "records": once["records"],
        "goals": {
            "ratio_first_to_last": f">= {GOAL_RATIO}",
            "query_limit_exceeded": f"<= {GOAL_QUERY_LIMIT_EXCEEDED}",
            "requests_per_submission": f"<= {goal_requests}",
            "first_delivery_s": f"<= {GOAL_FIRST_DELIVERY_SECONDS}",
            "lost_and_duplicated": "0, every submission delivered",
        },
        "met": {
            "ratio_first_to_last": isinstance(ratio, float) and ratio >= GOAL_RATIO,
            "query_limit_exceeded": len(limited) <= GOAL_QUERY_LIMIT_EXCEEDED,
            "requests_per_submission": per_submission <= goal_requests,
            "first_delivery_s": first_delivery is not None
            and first_delivery <= GOAL_FIRST_DELIVERY_SECONDS,
            "lost_and_duplicated": finished and once["lost"] == once["duplicated"] == 0,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--leads", type=int, help="submissions (default 10000; after an outage 1000, deals 300)"
    )
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--entity", choices=sorted(COMMANDS), default="lead")
    parser.add_argument("--after-outage", action="store_true", help="the after-an-outage case")
    parser.add_argument("--outage-seconds", type=float, default=20.0)
    parser.add_argument(
        "--backlog",
        choices=("tried", "gateway"),
        default="tried",
        help="after an outage: every submission tried with backoff (tried), or only what the "
        "gateway itself tried during the outage (gateway)",
    )
    parser.add_argument(
        "--limit-seconds", type=float, default=300.0, help="after an outage: stop the drain after"
    )
    args = parser.parse_args()
    if args.after_outage:
        leads = args.leads or (1000 if args.entity == "lead" else 300)
        coro = run_after_outage(
            leads,
            args.rate,
            args.burst,
            args.entity,
            args.outage_seconds,
            args.limit_seconds,
            args.backlog,
        )
    else:
        coro = run(args.leads or 10000, args.rate, args.burst, args.entity)
    print(json.dumps(asyncio.run(coro), indent=2))


if __name__ == "__main__":
    main()
