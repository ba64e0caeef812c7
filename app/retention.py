"""Retention (`RETENTION_DAYS`): erases the personal data of settled submissions.

Delivered and spam submissions are erased `RETENTION_DAYS` after acceptance; failed ones after
the retry horizon plus that period (the same time after their last chance of delivery). A thin
loop around `Store.erase_personal_data` and `Store.settle_erasure`, run by the lifespan once at
start and then every hour. Tests call `erase_expired` directly with their own clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from app.store import Store

log = logging.getLogger("app.retention")

INTERVAL_SECONDS = 3600.0
CHUNK = 500  # rows per transaction: short write locks, even after a long outage


async def erase_expired(store: Store, *, days: int, horizon_seconds: float, now: datetime) -> int:
    """Erase every submission past its retention; returns how many were erased.

    Then makes the erased values unreadable in the database files (`Store.settle_erasure`).
    """
    if days <= 0:
        return 0
    finished_before = now - timedelta(days=days)
    failed_before = finished_before - timedelta(seconds=horizon_seconds)
    total = 0
    while True:
        erased = await store.erase_personal_data(
            finished_before=finished_before, failed_before=failed_before, now=now, limit=CHUNK
        )
        total += erased
        if erased < CHUNK:
            break
    if not await store.settle_erasure():
        # A long reader kept the old pages needed; the next round tries again.
        log.warning("retention.checkpoint_incomplete")
    return total


async def run(
    store: Store,
    *,
    days: int,
    horizon_seconds: float,
    clock: Callable[[], datetime],
    interval_seconds: float = INTERVAL_SECONDS,
) -> None:
    """Erase now, then every `interval_seconds`, until cancelled."""
    while True:
        try:
            erased = await erase_expired(
                store, days=days, horizon_seconds=horizon_seconds, now=clock()
            )
        except SQLAlchemyError as exc:
            # The database is away; the next round catches up. No traceback: SQLAlchemy's
            # message may hold the statement's parameters.
            log.warning("retention.failed", extra={"error": type(exc).__name__})
        else:
            if erased:
                log.info("retention.erased", extra={"count": erased, "days": days})
        await asyncio.sleep(interval_seconds)
