"""The delivery worker: claim due submissions, send their commands in shared batches, record
what each produced. One pass (`run_once`) is what tests drive; `run` loops it until stopped.
Retries are recorded as the next attempt time by the store, never slept on here.

§ numbers refer to the sections of docs/bitrix24.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from app.bitrix import (
    MAX_BATCH_COMMANDS,
    BatchResult,
    BitrixClient,
    BitrixError,
    ConfigError,
    NotExecuted,
    OperationTimeLimit,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    Refused,
    RejectedError,
    batch_body_bytes,
)
from app.delivery import plan
from app.delivery.breaker import PORTAL_DOWN_LABELS, Breaker, portal_down
from app.delivery.marker import DEFAULT_QUOTE_FIELD, userfield_add_params
from app.delivery.retry import RetryPolicy
from app.metrics import Metrics
from app.store import AttemptRecord, Leadership, Outcome, Store, Submission

log = logging.getLogger("app.delivery")
# A lease is stretched only when it would end sooner than this before the portal could still
# be running a request: one write covers the requests of the next few seconds.
LEASE_SLACK_SECONDS = 5.0
# Submissions per origin look-up: a list answers 50 rows at most, and a record created twice by
# an older bug takes two; half a page leaves room (§2.2).
ORIGIN_IDS_PER_LOOKUP = 25
# Passes in a row whose look-ups travel with the pass before; then the run loop looks again
# at leadership and the breaker.
PIPELINE_PASSES = 12


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class WorkerConfig:
    originator_id: str = "b24-form-gateway"
    batch_size: int = 50
    # After an answer is lost, the portal may still be running the request (PHP runs to its
    # end, up to its 60 s limit): wait this long from sending before a look-up or a create
    # (§0 fact 15). It is also the lease: a crashed worker's claims return
    # this long after its last request.
    unknown_wait_seconds: float = 70.0
    batch_max_bytes: int = 512 * 1024
    quote_field: str = DEFAULT_QUOTE_FIELD
    create_marker_fields: bool = True
    poll_seconds: float = 1.0
    # The breaker's probe interval grows from this to `probe_max_seconds` while the portal is
    # down; the largest delay between the portal's return and the first delivery.
    probe_max_seconds: float = 2.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def identity(self) -> plan.Identity:
        return plan.Identity(originator_id=self.originator_id, quote_field=self.quote_field)


class Halted(NotExecuted):
    """Not run: an earlier command of the same `halt=1` batch failed (§5.1)."""


@dataclass(slots=True, eq=False)  # compared and hashed by identity
class _Job:
    """One submission's progress through this pass."""

    n: int
    pkg: plan.Package
    known: dict[str, int]
    unknown: bool
    trace_problem: str | None
    lease_until: datetime | None
    error: BitrixError | None = None
    plan: plan.CreatePlan = field(default_factory=plan.CreatePlan)
    sent_at: datetime | None = None
    wait_until: datetime | None = None  # no look-up or create before this (a lost answer)
    origin_found: dict[str, int] = field(default_factory=dict)  # records proven ours
    origin_pending: set[str] = field(default_factory=set)  # roles whose look-up is unanswered
    match_pending: set[str] = field(default_factory=set)  # match look-ups still unanswered
    rode: bool = False  # its creates went with the look-ups of others
    ahead: bool = False  # claimed during the pass before, its look-ups sent with its creates
    answers: dict[str, object] = field(default_factory=dict)  # what the match look-ups said

    @property
    def submission(self) -> Submission:
        return self.pkg.submission

    @property
    def id(self) -> str:
        return self.pkg.id


@dataclass(slots=True)
class _Entry:
    """Commands that travel together in one batch, the submissions they serve, and how to
    read their answers: `read(result, halted)` returns whether the batch stopped by then."""

    jobs: list[_Job]
    steps: list[plan.Step]
    read: Callable[[BatchResult, bool], bool]
    writes: bool = False  # creates: a lost answer leaves their outcome unknown


@dataclass(slots=True)
class _Asks:
    """The look-ups of a pass: entries that go in a batch, entries that must go as direct
    calls, and the members of match groups that found someone, to ask again one by one."""

    entries: list[_Entry] = field(default_factory=list)
    direct: list[_Entry] = field(default_factory=list)
    retry: list[tuple[_Job, plan.Step]] = field(default_factory=list)


def pass_size(most: int, *, creates_per_job: float, lookups_per_job: float) -> int:
    """How many submissions a pass of chains should take so that its last request of creates
    has room for the next pass's look-ups (each request holds 50 commands, §5.1)."""
    for size in range(most, 0, -1):
        used = math.ceil(size * creates_per_job)
        room = -used % MAX_BATCH_COMMANDS
        if room >= math.ceil(size * lookups_per_job):
            return size
    return most


def _not_about_it(error: BitrixError) -> bool:
    return portal_down(error) or isinstance(error, RateLimited | Halted)


def _clear(entry: _Entry) -> bool:
    return all(job.error is None for job in entry.jobs)


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
        on_failed: Callable[[Sequence[tuple[Submission, Outcome]]], None] | None = None,
    ) -> None:
        self.metrics = metrics
        # Told, once a pass's outcomes are committed, which submissions failed for good (as
        # claimed, each with its outcome). It must return at once: alerts are sent elsewhere,
        # so that telling people never holds up delivery.
        self.on_failed = on_failed
        self.leading = False  # this process's worker is the one that delivers
        self.store = store
        self.client = client
        self.config = config or WorkerConfig()
        self.clock = clock
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not security
        self._wake = asyncio.Event()
        self._stopping = False
        self._quote_marker_ready = False
        self._backlog_released = False
        self._pass_size = self.config.batch_size
        self._lookups_per_job = 0.0
        self.breaker = Breaker(max_probe_seconds=self.config.probe_max_seconds)

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
        standing_by = leading = False
        try:
            while not self._stopping:
                handled = 0
                pause = self.config.poll_seconds
                try:
                    if await leadership.hold():
                        if not leading:
                            # Whatever the previous worker sent still fills the portal's
                            # bucket: start as if it were full (docs/bitrix24.md §4.1). What
                            # the previous worker backed off because the portal was down is
                            # due now: if the portal is still down, the breaker finds out.
                            self.client.assume_bucket_full()
                            await self._release_backlog()
                        standing_by, leading = False, True
                        self.leading = True
                        if self.breaker.open:
                            pause = await self._probe_if_due()
                        if not self.breaker.open:
                            handled = await self.run_once()
                    else:
                        leading = self.leading = False
                        if not standing_by:
                            standing_by = True
                            log.info("worker.standing_by")
                except Exception:  # the store is down, a bug: log, back off, keep looping
                    log.exception("worker.pass_failed")
                if handled == 0 and not self._stopping:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=pause)
        finally:
            self.leading = False
            await leadership.release()
            log.info("worker.stopped")

    async def _probe_if_due(self) -> float:
        """While the breaker is open: one cheap call when it is time. Returns how long to
        sleep before looking again."""
        now = self.clock()
        if self.breaker.probe_due(now):
            try:
                await self.client.call("profile")
            except BitrixError as exc:
                if portal_down(exc):
                    now = self.clock()
                    self._trip(exc, now=now)
                    self._count_probe("down")
                else:
                    await self._portal_back()  # it answers; what it said is for deliveries
            else:
                await self._portal_back()
        if not self.breaker.open or self.breaker.next_probe_at is None:
            return 0.0
        wait = (self.breaker.next_probe_at - now).total_seconds()
        return max(0.0, min(wait, self.config.poll_seconds))

    async def _portal_back(self) -> None:
        """The portal answers again: the whole backlog that waited for it is due at once."""
        now = self.clock()
        opened = self.breaker.opened_at
        down = (now - opened).total_seconds() if opened else 0.0
        self.breaker.close()
        if self.metrics is not None:
            self.metrics.breaker_open.set(0)
        self._count_probe("up")
        log.warning("portal.back", extra={"down_ms": int(down * 1000)})
        await self._release_backlog()

    async def _release_backlog(self) -> None:
        """Make due every submission that waits only because the portal was down."""
        self._backlog_released = True
        released = await self.store.release_backlog(now=self.clock(), codes=PORTAL_DOWN_LABELS)
        if released:
            log.info("delivery.backlog_released", extra={"released": released})

    def _trip(self, error: BitrixError, *, now: datetime) -> None:
        """The portal as a whole is down: probe it instead of spending attempts."""
        if not self.breaker.open:
            log.warning("portal.down", extra={"error_code": error.label})
        self.breaker.trip(error, now=now, rng=self.rng)
        self._backlog_released = False
        if self.metrics is not None:
            self.metrics.breaker_open.set(1)

    def _count_probe(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.breaker_probes.labels(result=result).inc()

    async def run_once(self) -> int:
        """Claim due submissions and deliver them, pass after pass while the next pass's
        look-ups can travel with this pass's creates; returns how many were claimed."""
        jobs = await self._claim()
        total = 0
        passes = 0
        while jobs:
            passes += 1
            pipelined = passes < PIPELINE_PASSES and not self._stopping
            following = await self._deliver(jobs, ahead=self._claim if pipelined else None)
            total += len(jobs)
            jobs = following
        return total

    async def deliver(self, claimed: Sequence[Submission]) -> None:
        """Deliver these claimed submissions in one pass."""
        await self._deliver(self._jobs(claimed))

    async def _claim(self) -> list[_Job]:
        claimed = await self.store.claim_due(
            now=self.clock(),
            limit=self._pass_size,
            lease=timedelta(seconds=self.config.unknown_wait_seconds),
        )
        return self._jobs(claimed)

    @staticmethod
    def _jobs(claimed: Sequence[Submission]) -> list[_Job]:
        return [
            _Job(
                n,
                plan.package(s),
                known=dict(s.bitrix_ids),
                unknown=s.outcome_unknown,
                trace_problem=s.trace_problem,
                lease_until=s.lease_until,
            )
            for n, s in enumerate(claimed)
        ]

    async def _deliver(
        self, jobs: list[_Job], *, ahead: Callable[[], Awaitable[list[_Job]]] | None = None
    ) -> list[_Job]:
        """One pass; returns the submissions claimed for the next one, when `ahead` claimed
        some while this pass's creates still had room for their look-ups."""
        started = self.clock()
        for job in jobs:
            if job.ahead:
                self._take_ahead(job)
        await self._prepare_markers(jobs)
        await self._look_up([j for j in jobs if j.error is None])
        following = await self._create([j for j in jobs if j.error is None], ahead=ahead)
        now = self.clock()
        down = next((job.error for job in jobs if portal_down(job.error)), None)
        if down is None and not self._backlog_released:
            # The portal answers again: whatever waited only for it is due at once.
            await self._release_backlog()
        if down is not None:
            self._trip(down, now=now)
            # Nothing more goes until the portal answers: the next pass waits with the backlog.
            for job in following:
                job.error = down
            jobs, following = [*jobs, *following], []
        outcomes = [self._outcome(job, started=started, now=now) for job in jobs]
        await self.store.record_outcomes(outcomes, now=now)
        if self.metrics is not None:
            for outcome in outcomes:
                self.metrics.deliveries.labels(result=outcome.attempt.outcome).inc()
        self._report_failed(jobs, outcomes)
        return following

    def _report_failed(self, jobs: Sequence[_Job], outcomes: Sequence[Outcome]) -> None:
        failed = [
            (job.submission, outcome)
            for job, outcome in zip(jobs, outcomes, strict=True)
            if outcome.attempt.outcome == "failed"
        ]
        if failed and self.on_failed is not None:
            try:
                self.on_failed(failed)
            except Exception:  # a broken hook must not stop delivery
                log.exception("worker.on_failed_error")

    def _take_ahead(self, job: _Job) -> None:
        """A submission whose look-ups travelled with the pass before: keep the answers when
        every one came back, else forget them all and ask again in this pass."""
        complete = job.error is None and not job.origin_pending and not job.match_pending
        if not complete:
            job.error = None
            job.origin_pending.clear()
            job.match_pending.clear()
            job.origin_found.clear()
            job.answers.clear()
            job.ahead = False
        job.sent_at = None

    # ------------------------------------------------------------------ identity markers

    async def _prepare_markers(self, jobs: Sequence[_Job]) -> None:
        """Quotes are recognised by a custom field (delivery/marker.py): make sure the portal
        has it before a quote is created, or the quote could not be found after a lost answer."""
        waiting = [j for j in jobs if "quote" in j.pkg.roles and "quote" not in j.known]
        if not waiting or self._quote_marker_ready:
            return
        name = self.config.quote_field
        try:
            fields = await self.client.call("crm.quote.fields")
            if not (isinstance(fields, dict) and name in fields):
                if not self.config.create_marker_fields:
                    raise ConfigError(
                        f"the portal has no custom quote field {name}, needed to deliver quotes "
                        "exactly once; run `b24-form-gateway check --create-fields`"
                    )
                await self.client.call("crm.quote.userfield.add", userfield_add_params(name))
                log.warning("portal.marker_field_created", extra={"field": name})
            self._quote_marker_ready = True
        except BitrixError as exc:
            error = exc
            if isinstance(exc, PermanentError) and not isinstance(exc, ConfigError):
                error = ConfigError(
                    f"cannot create the custom quote field {name} ({exc.description}); create it "
                    "with `b24-form-gateway check --create-fields` as a CRM administrator",
                    code=exc.code,
                )
            for job in waiting:
                job.error = error

    # ------------------------------------------------------------------ phase 1

    async def _look_up(self, jobs: Sequence[_Job]) -> None:
        for job in jobs:
            if job.ahead:
                self._settle(job)  # asked with the pass before: known before anything rides
        active = [job for job in jobs if not self._waiting(job) and not job.ahead]
        asks = self._asks(active)
        batched = [e for e in asks.entries if _clear(e)]
        if batched:
            asking = {j for e in asks.entries + asks.direct for j in e.jobs}
            batched += self._riders([j for j in jobs if not self._waiting(j)], looked_up=asking)
        await self._send_all(batched, halt=False)
        # A group that found someone: its members ask on their own (plan.MatchGroup).
        alone = [self._match_entry(job, [step]) for job, step in asks.retry if job.error is None]
        self._pause(alone)
        await self._send_all([e for e in alone if _clear(e)], halt=False)
        for entry in asks.direct:
            if _clear(entry):
                await self._send_direct(entry)
        for job in active:
            self._settle(job)

    def _settle(self, job: _Job) -> None:
        """Take what the look-ups found: the job's records, and contacts or companies to reuse."""
        if job.error is None and (job.origin_pending or job.match_pending):
            # Its look-up travelled with a submission that could not go: never conclude
            # "not created" from a question that was not asked.
            job.error = Halted("look-up not sent with the others; asked again next pass")
        if job.error is not None or job.rode:
            return
        found = plan.resolve(job.pkg, job.answers, ours=job.origin_found)
        if found:
            log.info(
                "delivery.found_existing",
                extra={"submission_id": job.id, "roles": ",".join(sorted(found))},
            )
        job.known.update(found)
        # Every record not found is known not to exist: creating it is safe now.
        job.unknown = False

    def _asks(self, jobs: Sequence[_Job]) -> _Asks:
        """The look-up entries for these jobs: one list command per record type for the
        records of many, findbycomm in groups, the rest one entry per job."""
        asks = _Asks(self._origin_entries(jobs))
        by_kind: dict[str, list[tuple[_Job, plan.Step]]] = {}
        for job in jobs:
            steps = plan.lookups(job.pkg, known=job.known)
            if plan.must_go_direct(steps):
                asks.direct.append(self._match_entry(job, steps))
                continue
            for step in steps:
                if step.key in plan.MATCH_KEYS:
                    by_kind.setdefault(step.key, []).append((job, step))
                    job.match_pending.add(step.key)
            own = [step for step in steps if step.key not in plan.MATCH_KEYS]
            if own:
                asks.entries.append(self._match_entry(job, own))
        for name, pairs in by_kind.items():
            for group in plan.match_groups([step for _, step in pairs], key=f"m_{name}"):
                members = [pairs[i] for i in group.members]
                read = functools.partial(
                    self._read_match_group, group.step, name, members, asks.retry
                )
                jobs_asking = list(dict.fromkeys(j for j, _ in members))
                asks.entries.append(_Entry(jobs_asking, [group.step], read))
        self._pause(asks.entries + asks.direct)
        if jobs:
            commands = sum(len(entry.steps) for entry in asks.entries + asks.direct)
            self._lookups_per_job = commands / len(jobs)
        return asks

    def _riders(self, jobs: Sequence[_Job], *, looked_up: set[_Job]) -> list[_Entry]:
        """Creates that need no look-up and need no chain travel with the look-ups of others,
        so that the look-up request is not sent half empty (§4.1: a request is a request)."""
        riders = []
        for job in jobs:
            if job in looked_up or job.error is not None:
                continue
            job.unknown = False  # nothing to look up: every record is known, or none can exist
            planned = self._plan_creates(job)
            if planned is not None and planned[0] == "single":
                job.rode = True
                riders.append(planned[1])
        return riders

    def _origin_entries(self, jobs: Sequence[_Job]) -> list[_Entry]:
        """One list command per record type finds what interrupted attempts of many
        submissions may have created (an IN filter on the marker)."""
        wanted: dict[str, list[tuple[_Job, str]]] = {}
        for job in jobs:
            for role in plan.origin_roles(job.pkg, known=job.known):
                wanted.setdefault(role, []).append((job, job.pkg.origin_id(role)))
                job.origin_pending.add(role)
        entries = []
        for role, pairs in wanted.items():
            for start in range(0, len(pairs), ORIGIN_IDS_PER_LOOKUP):
                part = pairs[start : start + ORIGIN_IDS_PER_LOOKUP]
                step = plan.origin_lookup(
                    role,
                    [origin_id for _, origin_id in part],
                    identity=self.config.identity,
                    key=f"o_{role}_{start}",
                )
                read = functools.partial(self._read_origin, step, part)
                entries.append(_Entry(list(dict.fromkeys(j for j, _ in part)), [step], read))
        return entries

    def _read_origin(
        self, step: plan.Step, part: list[tuple[_Job, str]], result: BatchResult, halted: bool
    ) -> bool:
        if step.key in result.errors:
            for job, _ in part:
                job.error = result.errors[step.key]  # a read: it changed nothing
            return False
        if step.key not in result.results:
            return False  # not run (a halted batch): still pending, asked again
        origin_ids = [origin_id for _, origin_id in part]
        rows = plan.origin_rows(
            step.role, result.results.get(step.key), origin_ids, identity=self.config.identity
        )
        if rows.foreign:
            field_name = self.config.identity.marker(step.role).field
            error = ConfigError(
                f"the portal ignored the look-up filter on {field_name} (it answered records "
                "of others): the field is missing, so this record cannot be found again; "
                "run `b24-form-gateway check`"
            )
            for job, _ in part:
                job.error = error
            return False
        for job, origin_id in part:
            job.origin_pending.discard(step.role)
            if origin_id in rows.found:
                job.origin_found[step.role] = rows.found[origin_id]
            elif not rows.complete:
                job.error = OutcomeUnknown(
                    "the look-up answer filled a whole page; looking it up again", settled=True
                )
        return False

    def _match_entry(self, job: _Job, steps: Sequence[plan.Step]) -> _Entry:
        own = [plan.Step(f"j{job.n}_{s.key}", s.role, s.method, s.params) for s in steps]
        job.match_pending.update(s.key for s in steps)
        return _Entry([job], own, functools.partial(self._read_matches, job, own))

    def _pause(self, entries: Sequence[_Entry]) -> None:
        for entry in entries:
            if paused := self._paused(entry.steps):
                for job in entry.jobs:
                    job.error = paused

    def _read_match_group(
        self,
        step: plan.Step,
        name: str,
        members: list[tuple[_Job, plan.Step]],
        retry: list[tuple[_Job, plan.Step]],
        result: BatchResult,
        halted: bool,
    ) -> bool:
        if step.key not in result.results and step.key not in result.errors:
            return False  # not run (a halted batch): still pending, asked again
        answer = result.results.get(step.key)
        if len(members) == 1 and step.key in result.errors:
            members[0][0].error = result.errors[step.key]  # a read: it changed nothing
        elif step.key not in result.errors and (len(members) == 1 or plan.nobody_matched(answer)):
            for job, _ in members:
                job.answers[name] = answer
                job.match_pending.discard(name)
        else:
            # Someone matched (or the shared question failed): each asks on its own.
            retry.extend(members)
        return False

    def _read_matches(
        self, job: _Job, steps: list[plan.Step], result: BatchResult, halted: bool
    ) -> bool:
        prefix = f"j{job.n}_"
        for step in steps:
            if step.key in result.errors:
                job.error = result.errors[step.key]  # a read: it changed nothing
                return False
            if step.key not in result.results:
                return False  # not run (a halted batch): still pending, asked again
            name = step.key.removeprefix(prefix)
            job.answers[name] = result.results.get(step.key)
            job.match_pending.discard(name)
        return False

    # ------------------------------------------------------------------ phase 2

    async def _create(
        self, jobs: Sequence[_Job], *, ahead: Callable[[], Awaitable[list[_Job]]] | None = None
    ) -> list[_Job]:
        singles: list[_Entry] = []
        chains: list[_Entry] = []
        direct: list[_Entry] = []
        for job in jobs:
            if self._waiting(job) or job.unknown or job.rode:
                # Outcome still unknown (the look-up could not run): never create blind.
                continue
            if (planned := self._plan_creates(job)) is not None:
                kind, entry = planned
                {"single": singles, "chain": chains, "direct": direct}[kind].append(entry)
        # Independent records: halt=0, so one rejected lead does not hold back the others.
        await self._send_all(singles, halt=False)
        # Chained records: halt=1, or a failed create would feed garbage into $result (§5.2).
        self._size_passes(chains)
        chunks = list(self._chunks(chains))
        following: list[_Job] = []
        if chunks and ahead is not None:
            # The next pass's look-ups fill the room the last request of creates leaves.
            following = await ahead()
            self._ask_ahead(chunks[-1], following)
        for chunk in chunks:
            await self._send_chunk(chunk, halt=True)
        for entry in direct:
            await self._send_direct(entry)
        return following

    def _size_passes(self, chains: Sequence[_Entry]) -> None:
        """Passes of chains are sized to leave room for the next pass's look-ups; other passes
        take as many submissions as the batch size allows."""
        if not chains:
            self._pass_size = self.config.batch_size
            return
        creates = sum(len(entry.steps) for entry in chains) / len(chains)
        self._pass_size = pass_size(
            self.config.batch_size, creates_per_job=creates, lookups_per_job=self._lookups_per_job
        )

    def _ask_ahead(self, chunk: list[_Entry], following: list[_Job]) -> None:
        """Put the look-ups of the next pass's submissions at the end of a chain request, as
        far as they fit. A halted batch leaves them unasked: their pass asks again."""
        ready = [j for j in following if "quote" not in j.pkg.roles or self._quote_marker_ready]
        asks = self._asks(ready)
        commands = {step.key: step.command for entry in chunk for step in entry.steps}
        for entry in asks.entries:
            if not _clear(entry):
                continue
            more = commands | {step.key: step.command for step in entry.steps}
            too_big = batch_body_bytes(more) > self.config.batch_max_bytes
            if len(more) > MAX_BATCH_COMMANDS or too_big:
                continue
            chunk.append(entry)
            commands = more
        for job in ready:
            job.ahead = True

    def _plan_creates(self, job: _Job) -> tuple[str, _Entry] | None:
        """The job's create steps as an entry, and how it travels: "single" (one command,
        halt=0), "chain" (halt=1) or "direct"; None when nothing is to be sent."""
        job.plan = plan.creates(
            job.pkg, identity=self.config.identity, known=job.known, prefix=f"s{job.n}_"
        )
        steps = job.plan.steps
        if not steps:
            return None
        read = functools.partial(self._read_steps, job, steps)
        entry = _Entry([job], steps, read, writes=True)
        if paused := self._paused(steps):
            # A method the portal blocked for a while (§4.2): wait for its reset without
            # calling, while other methods keep flowing.
            job.error = paused
            return None
        if plan.must_go_direct(steps):
            return "direct", entry  # a value the portal would rewrite inside a batch (§0 fact 16)
        return ("single" if len(steps) == 1 else "chain"), entry

    def _read_steps(
        self, job: _Job, steps: list[plan.Step], result: BatchResult, halted: bool
    ) -> bool:
        """Take what the steps produced; returns whether the batch halted by now."""
        for step in steps:
            if step.key in result.errors:
                self._failed(job, step, result.errors[step.key])
                return True
            if step.key in result.results:
                if not self._took(job, step, result.results[step.key]):
                    return halted
                continue
            if not halted:
                # Missing from a batch that did not stop: it may have run.
                self._failed(job, step, OutcomeUnknown("the portal reported nothing", settled=True))
                return False
            job.error = Halted("not run: an earlier command of the batch failed")
            return True
        return halted

    def _took(self, job: _Job, step: plan.Step, value: object) -> bool:
        """Record a step's result; False (with the job's error set) when it is not usable."""
        if step.role == plan.LINK:
            if value is True or value == 1 or value == "1":
                job.known[plan.LINK] = job.known["company"]
                return True
        elif (new_id := plan.created_id(value)) is not None:
            job.known[step.role] = new_id
            return True
        self._failed(job, step, OutcomeUnknown("the portal answered without an id", settled=True))
        return False

    def _failed(self, job: _Job, step: plan.Step, error: BitrixError) -> None:
        job.error = error
        if isinstance(error, OutcomeUnknown):
            job.unknown = True
            self._lost(job, error)
        if step.role == plan.TRACE and isinstance(error, RejectedError):
            self._trace_refused(job, error)

    def _lost(self, job: _Job, error: OutcomeUnknown) -> None:
        """An answer that did not come back: the portal may still be running the request."""
        if not error.settled and job.sent_at is not None:
            until = job.sent_at + timedelta(seconds=self.config.unknown_wait_seconds)
            job.wait_until = max(job.wait_until or until, until)

    def _trace_refused(self, job: _Job, error: BitrixError) -> None:
        """The portal refused the trace step (§8.3): the records exist. Leave
        out a record the webhook may not edit, or send a UTM-only trace, and retry only the
        trace step; when nothing is left to try, deliver and keep the flag."""
        job.trace_problem = plan.after_trace_refusal(job.trace_problem, error.description)
        if plan.TraceState.parse(job.trace_problem).refused:
            log.warning(
                "delivery.trace_refused",
                extra={"submission_id": job.id, "error_code": error.label},
            )
            job.error = None
        else:
            job.error = Halted(f"trace refused, retrying the trace step: {error.description}")

    # ------------------------------------------------------------------ sending

    async def _send_all(self, entries: list[_Entry], *, halt: bool) -> None:
        for chunk in self._chunks(entries):
            await self._send_chunk(chunk, halt=halt)

    async def _send_chunk(self, chunk: list[_Entry], *, halt: bool, split: bool = True) -> bool:
        """One batch request; False when it was refused as a whole in front of the portal.

        Such a refusal (a WAF's page, 413, 414) ran nothing: the batch is split in halves and
        each is tried, so one submission's content cannot hold back the others (§0 fact 18).
        When both halves are refused too, the trouble is not the content: all wait.
        """
        jobs = list(dict.fromkeys(job for entry in chunk for job in entry.jobs))
        commands = {step.key: step.command for entry in chunk for step in entry.steps}
        try:
            result = await self.client.batch(commands, halt=halt, before_send=self._guard(jobs))
        except Refused as exc:
            if len(chunk) > 1 and split:
                half = len(chunk) // 2
                first, second = chunk[:half], chunk[half:]
                if await self._send_chunk(first, halt=halt):
                    await self._send_chunk(second, halt=halt)
                    return True
                return await self._send_chunk(second, halt=halt, split=False)
            for job in jobs:
                job.error = exc
            return False
        except BitrixError as exc:
            for entry in chunk:
                for job in entry.jobs:
                    job.error = exc
                    if entry.writes and isinstance(exc, OutcomeUnknown):
                        job.unknown = True
                        self._lost(job, exc)
            return True
        halted = False
        for entry in chunk:
            stopped = entry.read(result, halted)
            halted = halt and stopped
        return True

    async def _send_direct(self, entry: _Entry) -> None:
        """The steps one by one as direct calls, `$result` references resolved here; stops at
        the first failure, then reads the whole as a halted batch would be read."""
        result = BatchResult()
        for step in entry.steps:
            try:
                result.results[step.key] = await self.client.call(
                    step.method,
                    plan.with_ids(step.params, result.results),
                    before_send=self._guard(entry.jobs),
                )
            except BitrixError as exc:
                result.errors[step.key] = exc
                break
        entry.read(result, True)

    def _guard(self, jobs: Sequence[_Job]) -> Callable[[], Awaitable[None]]:
        """Runs just before a request goes out: note when it was sent, and keep the leases of
        its submissions beyond the time the portal could still be running it."""

        async def before_send() -> None:
            now = self.clock()
            wait = timedelta(seconds=self.config.unknown_wait_seconds)
            short = [j for j in jobs if j.lease_until is None or j.lease_until < now + wait]
            until = now + wait + timedelta(seconds=LEASE_SLACK_SECONDS)
            if short:
                await self.store.extend_leases([j.id for j in short], until=until)
                for job in short:
                    job.lease_until = until
            for job in jobs:
                job.sent_at = now

        return before_send

    def _waiting(self, job: _Job) -> bool:
        return job.wait_until is not None or job.error is not None

    def _paused(self, steps: Iterable[plan.Step]) -> OperationTimeLimit | None:
        for step in steps:
            if (until := self.client.blocked_until(step.method)) is not None:
                paused = OperationTimeLimit(
                    f"{step.method} is paused by the portal's operation time limit",
                    code="OPERATION_TIME_LIMIT",
                    method=step.method,
                )
                paused.reset_at = until
                return paused
        return None

    def _chunks(self, entries: list[_Entry]) -> Iterator[list[_Entry]]:
        """Group entries so that no batch exceeds 50 commands or BATCH_MAX_BYTES; an entry's
        commands stay together in one batch."""
        chunk: list[_Entry] = []
        count = size = 0
        for entry in entries:
            entry_size = batch_body_bytes({s.key: s.command for s in entry.steps})
            over = count + len(entry.steps) > MAX_BATCH_COMMANDS
            if chunk and (over or size + entry_size > self.config.batch_max_bytes):
                yield chunk
                chunk, count, size = [], 0, 0
            chunk.append(entry)
            count += len(entry.steps)
            size += entry_size
        if chunk:
            yield chunk

    # ------------------------------------------------------------------ recording

    def _outcome(self, job: _Job, *, started: datetime, now: datetime) -> Outcome:
        """Decide what follows this pass for one submission, and log it."""
        submission = job.submission
        fields: dict[str, object] = {
            "submission_id": submission.id,
            "attempt": submission.attempts,
            "duration_ms": int((now - started).total_seconds() * 1000),
        }
        changed = job.trace_problem if job.trace_problem != submission.trace_problem else None
        if job.error is None and job.wait_until is None:
            log.info("delivery.delivered", extra=fields)
            return Outcome(
                submission.id,
                AttemptRecord(submission.attempts, started, now, "delivered"),
                bitrix_ids=job.known,
                trace_problem=changed,
            )
        error = job.error or OutcomeUnknown("waiting for a lost request to finish")
        fields["error_code"] = error.label
        excerpt = error.excerpt or error.description
        next_at = self.config.policy.next_attempt(
            error,
            attempts=submission.attempts,
            accepted_at=submission.horizon_start,
            now=now,
            rng=self.rng,
        )
        if next_at is not None and (changed is not None or _not_about_it(error)):
            # Due at once: only the trace step is left, with a different trace or links; or
            # the failure was not about this submission (the portal down: the breaker holds
            # every claim until it answers; its bucket full: ours paces the next request;
            # another submission halted the batch).
            next_at = now
        if next_at is not None and job.wait_until is not None:
            # The portal may still be running the lost request: nothing before it is over.
            next_at = max(next_at, job.wait_until)
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
            trace_problem=changed,
        )
