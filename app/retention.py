"""Retention (`RETENTION_DAYS`): erases the personal data of old finished submissions.

A thin loop around `Store.erase_personal_data`, run by the lifespan once at start and then
every hour. Tests call `erase_expired` directly with their own clock.
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


async def erase_expired(store: Store, *, days: int, now: datetime) -> int:
    """Erase every finished submission older than `days`; returns how many were erased."""
    if days <= 0:
        return 0
    cutoff = now - timedelta(days=days)
    total = 0
    while True:
        erased = await store.erase_personal_data(created_before=cutoff, now=now, limit=CHUNK)
        total += erased
        if erased < CHUNK:
            return total


async def run(
    store: Store,
    *,
    days: int,
    clock: Callable[[], datetime],
    interval_seconds: float = INTERVAL_SECONDS,
) -> None:
    """Erase now, then every `interval_seconds`, until cancelled."""
    while True:
        try:
            erased = await erase_expired(store, days=days, now=clock())
        except SQLAlchemyError as exc:
            # The database is away; the next round catches up. No traceback: SQLAlchemy's
            # message may hold the statement's parameters.
            log.warning("retention.failed", extra={"error": type(exc).__name__})
        else:
            if erased:
                log.info("retention.erased", extra={"count": erased, "days": days})
        await asyncio.sleep(interval_seconds)
