"""The delivery worker: claim due submissions, send their commands in shared batches, record
what each produced. One pass (`run_once`) is what tests drive; `run` loops it until stopped.
Retries are recorded as the next attempt time by the store, never slept on here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, TypeVar

from app.bitrix import (
    MAX_BATCH_COMMANDS,
    BatchResult,
    BitrixClient,
    BitrixError,
    NotExecuted,
    OperationTimeLimit,
    OutcomeUnknown,
    RejectedError,
)
from app.delivery import plan
from app.delivery.retry import RetryPolicy
from app.metrics import Metrics
from app.store import AttemptRecord, Leadership, Outcome, Store, Submission

log = logging.getLogger("app.delivery")
T = TypeVar("T")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class WorkerConfig:
    originator_id: str = "b24-form-gateway"
    batch_size: int = 50
    lease_seconds: float = 300.0
    poll_seconds: float = 1.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)


class Halted(NotExecuted):
    """Not run: an earlier command of the same `halt=1` batch failed (§5.1)."""


@dataclass(slots=True)
class _Job:
    """One submission's progress through this pass."""

    pkg: plan.Package
    known: dict[str, int]
    unknown: bool
    error: BitrixError | None = None
    trace_problem: str | None = None
    plan: plan.CreatePlan = field(default_factory=plan.CreatePlan)

    @property
    def submission(self) -> Submission:
        return self.pkg.submission


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
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
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
        """Deliver until `stop()`; a pass in flight is finished first.

        Only the elected worker delivers (one per database, see store.leader): the others
        stand by and take over when it goes away, so the portal's limit holds in total.
        """
        log.info("worker.started")
        leadership = Leadership(self.store.engine)
        standing_by = False
        try:
            while not self._stopping:
                handled = 0
                try:
                    if await leadership.hold():
                        standing_by = False
                        handled = await self.run_once()
                    elif not standing_by:
                        standing_by = True
                        log.info("worker.standing_by")
                except Exception:  # the store is down, a bug: log, back off, keep looping
                    log.exception("worker.pass_failed")
                if handled == 0 and not self._stopping:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_seconds)
        finally:
            await leadership.release()
            log.info("worker.stopped")

    async def run_once(self) -> int:
        """Claim one batch of due submissions and deliver it; returns how many were claimed."""
        claimed = await self.store.claim_due(
            now=self.clock(),
            limit=self.config.batch_size,
            lease=timedelta(seconds=self.config.lease_seconds),
        )
        if claimed:
            await self.deliver(claimed)
        return len(claimed)

    async def deliver(self, claimed: Sequence[Submission]) -> None:
        started = self.clock()
        jobs = [
            _Job(plan.package(s), known=dict(s.bitrix_ids), unknown=s.outcome_unknown)
            for s in claimed
        ]
        await self._look_up(jobs)
        await self._create([j for j in jobs if j.error is None])
        now = self.clock()
        outcomes = [self._outcome(job, started=started, now=now) for job in jobs]
        await self.store.record_outcomes(outcomes, now=now)
        if self.metrics is not None:
            for outcome in outcomes:
                self.metrics.deliveries.labels(result=outcome.attempt.outcome).inc()

    # ------------------------------------------------------------------ phase 1

    async def _look_up(self, jobs: Sequence[_Job]) -> None:
        originator = self.config.originator_id
        pending = []
        for n, job in enumerate(jobs):
            cmds = plan.lookups(job.pkg, originator_id=originator, known=job.known)
            if paused := self._paused(cmds.values()):
                job.error = paused
                continue
            pending.append(((n, job, cmds), len(cmds)))
        for chunk in _chunks(entry for entry in pending if entry[1]):
            commands = {f"j{n}_{name}": text for n, _, cmds in chunk for name, text in cmds.items()}
            try:
                result = await self.client.batch(commands, halt=False)
            except BitrixError as exc:
                for _, job, _cmds in chunk:
                    job.error = exc
                continue
            for n, job, cmds in chunk:
                answers: dict[str, object] = {}
                for name in cmds:
                    key = f"j{n}_{name}"
                    if key in result.errors:
                        job.error = result.errors[key]
                        break
                    answers[name] = result.results.get(key)
                else:
                    found = plan.resolve(job.pkg, answers)
                    if found:
                        log.info(
                            "delivery.found_existing",
                            extra={"submission_id": job.pkg.id, "roles": ",".join(sorted(found))},
                        )
                    job.known.update(found)
                    # Every record not found is known not to exist: creating it is safe now.
                    job.unknown = False

    # ------------------------------------------------------------------ phase 2

    async def _create(self, jobs: Sequence[_Job]) -> None:
        originator = self.config.originator_id
        singles: list[tuple[_Job, int]] = []
        chains: list[tuple[_Job, int]] = []
        for n, job in enumerate(jobs):
            job.plan = plan.creates(
                job.pkg, originator_id=originator, known=job.known, prefix=f"s{n}_"
            )
            if paused := self._paused(step.command for step in job.plan.steps):
                # A method the portal blocked for a while (§4.2): wait for its reset without
                # calling, while submissions that need other methods keep flowing.
                job.error = paused
            elif len(job.plan.steps) == 1:
                singles.append((job, 1))
            elif job.plan.steps:
                chains.append((job, len(job.plan.steps)))
        # Independent records: halt=0, so one rejected lead does not hold back the others.
        for chunk in _chunks(singles):
            await self._send(chunk, halt=False)
        # Chained records: halt=1, or a failed create would feed garbage into $result (§5.2).
        for chunk in _chunks(chains):
            await self._send(chunk, halt=True)

    async def _send(self, chunk: Sequence[_Job], *, halt: bool) -> None:
        commands = {step.key: step.command for job in chunk for step in job.plan.steps}
        try:
            result = await self.client.batch(commands, halt=halt)
        except BitrixError as exc:
            for job in chunk:
                job.error = exc
                job.unknown = job.unknown or isinstance(exc, OutcomeUnknown)
            return
        halted = False
        for job in chunk:
            stopped = self._read_steps(job, result, halted=halted)
            halted = halt and stopped

    def _read_steps(self, job: _Job, result: BatchResult, *, halted: bool) -> bool:
        """Take the ids the steps produced; returns whether the batch halted by now."""
        for step in job.plan.steps:
            if step.key in result.errors:
                error = result.errors[step.key]
                job.error = error
                job.unknown = job.unknown or isinstance(error, OutcomeUnknown)
                if step.role == "trace" and isinstance(error, RejectedError):
                    self._trace_rejected(job, error)
                return True
            new_id = plan.created_id(result.results.get(step.key))
            if step.key in result.results and new_id is not None:
                job.known[step.role] = new_id
                continue
            if step.key in result.results or not halted:
                # Answered without an id, or missing from a batch that did not stop: unknown.
                job.error = OutcomeUnknown("the portal returned no id", method=step.command)
                job.unknown = True
                return halted
            job.error = Halted("not run: an earlier command of the batch failed")
            return True
        return halted

    def _paused(self, commands: Iterable[str]) -> OperationTimeLimit | None:
        for text in commands:
            method = text.split("?", 1)[0]
            if (until := self.client.blocked_until(method)) is not None:
                paused = OperationTimeLimit(
                    f"{method} is paused by the portal's operation time limit",
                    code="OPERATION_TIME_LIMIT",
                    method=method,
                )
                paused.reset_at = until
                return paused
        return None

    def _trace_rejected(self, job: _Job, error: BitrixError) -> None:
        """The portal refused the trace (§8.3): the records exist; retry only the trace step,
        with a UTM-only trace (§8.4). Never repeat the creates."""
        if job.submission.trace_problem == plan.TRACE_REJECTED:
            return  # the UTM-only trace was refused too: a permanent failure
        job.trace_problem = plan.TRACE_REJECTED
        job.error = Halted(f"trace rejected, retrying with UTM only: {error.description}")

    # ------------------------------------------------------------------ recording

    def _outcome(self, job: _Job, *, started: datetime, now: datetime) -> Outcome:
        """Decide what follows this pass for one submission, and log it."""
        submission = job.submission
        fields: dict[str, object] = {
            "submission_id": submission.id,
            "attempt": submission.attempts,
            "duration_ms": int((now - started).total_seconds() * 1000),
        }
        if job.error is None:
            log.info("delivery.delivered", extra=fields)
            return Outcome(
                submission.id,
                AttemptRecord(submission.attempts, started, now, "delivered"),
                bitrix_ids=job.known,
            )
        error = job.error
        fields["error_code"] = error.label
        excerpt = error.excerpt or error.description
        next_at = self.config.policy.next_attempt(
            error,
            attempts=submission.attempts,
            accepted_at=submission.horizon_start,
            now=now,
            rng=self.rng,
        )
        if job.trace_problem is not None:
            next_at = now  # only the trace step is left, with a different trace
        kind: Literal["retry", "failed"] = "failed" if next_at is None else "retry"
        if next_at is None:
            log.error("delivery.failed", extra=fields)
        else:
            fields["retry_in_ms"] = int((next_at - now).total_seconds() * 1000)
            log.warning("delivery.retry_scheduled", extra=fields)
        return Outcome(
            submission.id,
            AttemptRecord(submission.attempts, started, now, kind, error.label, excerpt),
            bitrix_ids=job.known,
            next_attempt_at=next_at,
            error=error.description,
            outcome_unknown=job.unknown,
            trace_problem=job.trace_problem,
        )


def _chunks(entries: Iterable[tuple[T, int]]) -> Iterator[list[T]]:
    """Group (item, command count) entries so that no batch exceeds 50 commands; an item's
    commands stay together in one batch."""
    chunk: list[T] = []
    size = 0
    for item, count in entries:
        if chunk and size + count > MAX_BATCH_COMMANDS:
            yield chunk
            chunk, size = [], 0
        chunk.append(item)
        size += count
    if chunk:
        yield chunk
