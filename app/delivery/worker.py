"""The delivery worker: claim due submissions, send their commands in batches, record outcomes.

One pass (`run_once`) is what tests drive directly; `run` loops it until stopped. Retries are
recorded as the next attempt time by the store, never slept on here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from app.bitrix import BitrixClient, BitrixError, OutcomeUnknown
from app.delivery import plan
from app.delivery.retry import RetryPolicy
from app.store import AttemptRecord, Store, Submission

log = logging.getLogger("app.delivery")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class WorkerConfig:
    originator_id: str = "b24-form-gateway"
    batch_size: int = 50
    lease_seconds: float = 300.0
    poll_seconds: float = 1.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)


@dataclass(slots=True)
class _Outcome:
    """What happened to one submission in this pass."""

    submission: Submission
    lead_id: int | None = None
    error: BitrixError | None = None
    # True when a create may have run without us learning its result.
    unknown: bool = False


class Worker:
    """Delivers submissions from the store to the portal through the client."""

    def __init__(
        self,
        store: Store,
        client: BitrixClient,
        config: WorkerConfig | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.config = config or WorkerConfig()
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        """Tell the worker that something became due (a new submission was committed)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until `stop()`; a pass in flight is finished first."""
        log.info("worker.started")
        while not self._stopping:
            try:
                handled = await self.run_once()
            except Exception:  # the store is down, a bug: log, back off, keep the loop alive
                log.exception("worker.pass_failed")
                handled = 0
            if handled == 0 and not self._stopping:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_seconds)
        log.info("worker.stopped")

    async def run_once(self) -> int:
        """Claim one batch of due submissions and deliver it; returns how many were claimed."""
        now = self.clock()
        claimed = await self.store.claim_due(
            now=now,
            limit=self.config.batch_size,
            lease=timedelta(seconds=self.config.lease_seconds),
        )
        if claimed:
            await self.deliver(claimed)
        return len(claimed)

    async def deliver(self, claimed: Sequence[Submission]) -> None:
        started = self.clock()
        outcomes: list[_Outcome] = []
        to_create: list[Submission] = []
        to_look_up: list[Submission] = []
        for submission in claimed:
            if "lead" in submission.bitrix_ids:
                outcomes.append(_Outcome(submission, lead_id=submission.bitrix_ids["lead"]))
            elif submission.outcome_unknown:
                to_look_up.append(submission)
            else:
                to_create.append(submission)
        if to_look_up:
            found, missing = await self._look_up(to_look_up)
            outcomes.extend(found)
            to_create.extend(missing)
        if to_create:
            outcomes.extend(await self._create(to_create))
        for outcome in outcomes:
            await self._record(outcome, started=started)

    async def _look_up(
        self, submissions: Sequence[Submission]
    ) -> tuple[list[_Outcome], list[Submission]]:
        """Find leads that an attempt with a lost answer may have created (§7.1)."""
        keys = {f"q{i}": s for i, s in enumerate(submissions)}
        commands = {
            k: plan.lead_lookup(s, originator_id=self.config.originator_id) for k, s in keys.items()
        }
        try:
            result = await self.client.batch(commands, halt=False)
        except BitrixError as exc:
            return [_Outcome(s, error=exc, unknown=True) for s in submissions], []
        found: list[_Outcome] = []
        missing: list[Submission] = []
        for key, submission in keys.items():
            if key in result.errors:
                found.append(_Outcome(submission, error=result.errors[key], unknown=True))
            elif key not in result.results:
                error = OutcomeUnknown("the look-up was not answered", method="crm.lead.list")
                found.append(_Outcome(submission, error=error, unknown=True))
            elif (lead_id := plan.found_id(result.results[key])) is not None:
                log.info("delivery.found_existing", extra={"submission_id": submission.id})
                found.append(_Outcome(submission, lead_id=lead_id))
            else:
                missing.append(submission)
        return found, missing

    async def _create(self, submissions: Sequence[Submission]) -> list[_Outcome]:
        keys = {f"s{i}": s for i, s in enumerate(submissions)}
        commands = {
            k: plan.lead_add(s, originator_id=self.config.originator_id) for k, s in keys.items()
        }
        try:
            # halt=0: the leads are independent; one rejected lead must not stop the others.
            result = await self.client.batch(commands, halt=False)
        except BitrixError as exc:
            unknown = isinstance(exc, OutcomeUnknown)
            return [_Outcome(s, error=exc, unknown=unknown) for s in submissions]
        outcomes: list[_Outcome] = []
        for key, submission in keys.items():
            if key in result.errors:
                error = result.errors[key]
                outcomes.append(
                    _Outcome(submission, error=error, unknown=isinstance(error, OutcomeUnknown))
                )
            elif (lead_id := plan.created_id(result.results.get(key))) is not None:
                outcomes.append(_Outcome(submission, lead_id=lead_id))
            else:
                error = OutcomeUnknown("the add returned no id", method="crm.lead.add")
                outcomes.append(_Outcome(submission, error=error, unknown=True))
        return outcomes

    async def _record(self, outcome: _Outcome, *, started: datetime) -> None:
        submission = outcome.submission
        now = self.clock()
        duration_ms = int((now - started).total_seconds() * 1000)
        if outcome.lead_id is not None:
            await self.store.record_delivered(
                submission.id,
                bitrix_ids={"lead": outcome.lead_id},
                attempt=AttemptRecord(submission.attempts, started, now, "delivered"),
                now=now,
            )
            log.info(
                "delivery.delivered",
                extra={
                    "submission_id": submission.id,
                    "attempt": submission.attempts,
                    "duration_ms": duration_ms,
                },
            )
            return
        error = outcome.error or OutcomeUnknown("no outcome recorded")
        excerpt = error.excerpt or error.description
        next_at = self.config.policy.next_attempt(
            error,
            attempts=submission.attempts,
            accepted_at=submission.created_at,
            now=now,
            rng=self.rng,
        )
        fields = {
            "submission_id": submission.id,
            "attempt": submission.attempts,
            "error_code": error.label,
            "duration_ms": duration_ms,
        }
        if next_at is None:
            await self.store.mark_failed(
                submission.id,
                error=error.description,
                error_code=error.label,
                outcome_unknown=outcome.unknown,
                attempt=AttemptRecord(
                    submission.attempts, started, now, "failed", error.label, excerpt
                ),
                now=now,
            )
            log.error("delivery.failed", extra=fields)
            return
        await self.store.schedule_retry(
            submission.id,
            next_attempt_at=next_at,
            error=error.description,
            error_code=error.label,
            outcome_unknown=outcome.unknown,
            attempt=AttemptRecord(submission.attempts, started, now, "retry", error.label, excerpt),
            now=now,
        )
        fields["retry_in_ms"] = int((next_at - now).total_seconds() * 1000)
        log.warning("delivery.retry_scheduled", extra=fields)
