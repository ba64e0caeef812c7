"""The storage budget: intake answers 503 before a flood of posts fills the disk.

Two limits, each off at 0: the free space left on the SQLite file's disk (`STORAGE_MIN_FREE_MB`),
and the rows one form may add per hour, spam included (`STORAGE_MAX_SUBMISSIONS_PER_FORM_HOUR`,
which works on PostgreSQL too). Reads through the store; writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from app.metrics import Metrics
from app.store import Store

log = logging.getLogger("app.intake")

WINDOW = timedelta(hours=1)
# How long a form's count and the disk's free space are taken as current. Between counts the
# process adds its own inserts, so several replicas can overshoot a form's budget by what they
# accept in this time; the disk watermark leaves room for that.
RECOUNT_SECONDS = 5.0
DISK_CHECK_SECONDS = 1.0
DISK_RETRY_AFTER_SECONDS = 60
LOG_EVERY_SECONDS = 60.0
DISK = "disk"
FORM_HOUR = "form_hour"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a post cannot be stored now, and when to try again."""

    reason: str  # DISK or FORM_HOUR, the metric's label
    message: str
    retry_after: int


@dataclass(slots=True)
class _FormCount:
    count: int
    oldest: datetime | None
    counted_at: float


class StorageBudget:
    """Decides, before a post is read, whether there is room to store it."""

    def __init__(
        self,
        store: Store,
        *,
        min_free_bytes: int,
        max_per_form_hour: int,
        form_ids: Iterable[str],
        clock: Callable[[], datetime],
        metrics: Metrics | None = None,
    ) -> None:
        self._store = store
        self._min_free = min_free_bytes
        self._max_per_hour = max_per_form_hour
        self._clock = clock
        self._metrics = metrics
        self._directory: Path | None = store.data_directory() if min_free_bytes > 0 else None
        self._free: tuple[int, float] | None = None
        self._counts: dict[str, _FormCount] = {}
        self._lock = asyncio.Lock()
        self._refused: dict[tuple[str, str], tuple[int, float | None]] = {}
        if metrics is not None:
            for form_id in form_ids:  # series from the start, so increase() sees the first
                for reason in (DISK, FORM_HOUR):
                    metrics.storage_refused.labels(form=form_id, reason=reason)
            if (directory := self._directory) is not None:
                metrics.storage_free.set_function(
                    lambda: float(self._free_bytes(directory, fresh=True))
                )

    async def refusal(self, form_id: str) -> Refusal | None:
        """A reason to refuse a new row for this form now, or None; counted when refused."""
        refusal = self._disk_refusal() or await self._form_refusal(form_id)
        if refusal is not None:
            if self._metrics is not None:
                self._metrics.storage_refused.labels(form=form_id, reason=refusal.reason).inc()
            self._log_refusal(form_id, refusal.reason)
        return refusal

    def _log_refusal(self, form_id: str, reason: str) -> None:
        # A flood is refused thousands of times a minute: one line a minute says as much.
        key = (form_id, reason)
        refused, logged_at = self._refused.get(key, (0, None))
        now = time.monotonic()
        if logged_at is not None and now - logged_at < LOG_EVERY_SECONDS:
            self._refused[key] = (refused + 1, logged_at)
            return
        self._refused[key] = (0, now)
        log.warning(
            "intake.storage_budget_exceeded",
            extra={"form_id": form_id, "reason": reason, "refused_since_last": refused},
        )

    def stored(self, form_id: str) -> None:
        """A row of this form was created: counted until the next recount."""
        if (entry := self._counts.get(form_id)) is not None:
            entry.count += 1

    def _free_bytes(self, directory: Path, *, fresh: bool = False) -> int:
        now = time.monotonic()
        if fresh or self._free is None or now - self._free[1] > DISK_CHECK_SECONDS:
            self._free = (shutil.disk_usage(directory).free, now)
        return self._free[0]

    def _disk_refusal(self) -> Refusal | None:
        if self._directory is None or self._free_bytes(self._directory) >= self._min_free:
            return None
        return Refusal(
            DISK, "the gateway's disk is nearly full; try later", DISK_RETRY_AFTER_SECONDS
        )

    async def _form_refusal(self, form_id: str) -> Refusal | None:
        if self._max_per_hour <= 0:
            return None
        entry = self._counts.get(form_id)
        if entry is None or time.monotonic() - entry.counted_at > RECOUNT_SECONDS:
            async with self._lock:
                entry = self._counts.get(form_id)
                if entry is None or time.monotonic() - entry.counted_at > RECOUNT_SECONDS:
                    since = self._clock() - WINDOW
                    count, oldest = await self._store.created_since(form_id, since)
                    entry = _FormCount(count, oldest, time.monotonic())
                    self._counts[form_id] = entry
        if entry.count < self._max_per_hour:
            return None
        # Room comes back when the oldest row of the hour leaves the window.
        wait = (entry.oldest + WINDOW - self._clock()).total_seconds() if entry.oldest else 60
        return Refusal(
            FORM_HOUR,
            "this form takes no more submissions for now; try later",
            int(min(max(wait, 1), WINDOW.total_seconds())),
        )
