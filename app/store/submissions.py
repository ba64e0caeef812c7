"""Every read and state change of a submission, each in one transaction.

The submissions table is the outbox and the queue: `enqueue` commits before the browser is
answered, `claim_due` leases due rows to a worker, and `record_outcomes` records what
each attempt produced (delivered, retry at a set time, failed). No other module writes SQL.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.store.db import BUSY_TIMEOUT_MS
from app.store.tables import Status, UTCDateTime, attempts, submissions
from app.store.writer import Writer

EXCERPT_CHARS = 500
CHECKPOINT_WAIT_MS = 2_000


@dataclass(frozen=True, slots=True)
class NewSubmission:
    """A submission as the intake accepted it, ready to be committed."""

    id: str
    form_id: str
    entity: str
    fields: Mapping[str, Sequence[str]]
    crm: Mapping[str, Any]
    body_hash: str
    idempotency_key: str | None = None
    trace: str | None = None
    trace_is_id: bool = False
    trace_problem: str | None = None
    status: Status = Status.ACCEPTED
    spam_reason: str | None = None
    client_key: str | None = None

    @classmethod
    def spam(
        cls,
        *,
        submission_id: str,
        form_id: str,
        entity: str,
        body_hash: str,
        reason: str,
        client_key: str,
        idempotency_key: str | None = None,
    ) -> NewSubmission:
        """Spam as evidence, not as payload: no fields, no CRM values, no trace, so a flood of
        large spam posts costs a few hundred bytes a post."""
        return cls(
            id=submission_id,
            form_id=form_id,
            entity=entity,
            fields={},
            crm={},
            body_hash=body_hash,
            idempotency_key=idempotency_key,
            status=Status.SPAM,
            spam_reason=reason[:64],
            client_key=client_key[:64],
        )


@dataclass(frozen=True, slots=True)
class Submission:
    """A stored submission."""

    id: str
    form_id: str
    entity: str
    status: Status
    created_at: datetime
    updated_at: datetime
    idempotency_key: str | None
    body_hash: str
    fields: dict[str, list[str]]
    crm: dict[str, Any]
    trace: str | None
    trace_is_id: bool
    trace_problem: str | None
    attempts: int
    next_attempt_at: datetime
    lease_until: datetime | None
    outcome_unknown: bool
    last_error: str | None
    last_error_code: str | None
    bitrix_ids: dict[str, int]
    delivered_at: datetime | None
    retry_from: datetime | None = None
    spam_reason: str | None = None
    client_key: str | None = None

    @property
    def horizon_start(self) -> datetime:
        """Where the retry horizon counts from: acceptance, or the last retry by hand."""
        return self.retry_from or self.created_at


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """What one delivery attempt did, kept for the operator."""

    attempt: int
    started_at: datetime
    finished_at: datetime
    outcome: Literal["delivered", "retry", "failed"]
    error_code: str | None = None
    excerpt: str | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one attempt did to one submission; `attempt.outcome` says which state follows."""

    id: str
    attempt: AttemptRecord
    bitrix_ids: Mapping[str, int] = field(default_factory=dict)
    next_attempt_at: datetime | None = None
    error: str | None = None
    outcome_unknown: bool = False
    trace_problem: str | None = None


@dataclass(frozen=True, slots=True)
class Enqueued:
    """The result of `enqueue`: the stored row, and whether this call created it."""

    submission: Submission
    created: bool


@dataclass(slots=True)
class Page:
    items: list[Submission] = field(default_factory=list)
    total: int = 0


def _row(mapping: Mapping[Any, Any]) -> Submission:
    data = dict(mapping)
    data["status"] = Status(data["status"])
    data["bitrix_ids"] = dict(data["bitrix_ids"] or {})
    return Submission(**data)


def _excerpt(text: str | None) -> str | None:
    if text is None:
        return None
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"


class Store:
    """The gateway's database. Each method is one transaction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._writer = Writer(engine, submissions)
        # True at start: a process that crashed after erasing may have left the old pages in
        # the write-ahead log, so the first `settle_erasure` checkpoints anyway.
        self._erasure_unsettled = True

    async def ping(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(select(1))

    # ------------------------------------------------------------------ intake

    async def enqueue(self, new: NewSubmission, *, now: datetime) -> Enqueued:
        """Commit a new submission; with an idempotency key already used, return the first one."""
        values = {
            "id": new.id,
            "form_id": new.form_id,
            "entity": new.entity,
            "status": new.status.value,
            "created_at": now,
            "updated_at": now,
            "idempotency_key": new.idempotency_key,
            "body_hash": new.body_hash,
            "fields": {k: list(v) for k, v in new.fields.items()},
            "crm": dict(new.crm),
            "trace": new.trace,
            "trace_is_id": new.trace_is_id,
            "trace_problem": new.trace_problem,
            "attempts": 0,
            "next_attempt_at": now,
            "lease_until": None,
            "outcome_unknown": False,
            "last_error": None,
            "last_error_code": None,
            "bitrix_ids": {},
            "delivered_at": None,
            "retry_from": None,
            "spam_reason": new.spam_reason,
            "client_key": new.client_key,
        }
        if await self._writer.insert(values):
            return Enqueued(_row(values), created=True)
        if new.idempotency_key is not None:
            existing = await self.find_by_key(new.form_id, new.idempotency_key)
            if existing is not None:
                return Enqueued(existing, created=False)
        # The id itself clashed (never for uuid4 ids), or the keyed row vanished meanwhile.
        raise IntegrityError("INSERT INTO submissions", None, Exception("conflict"))

    async def find_by_key(self, form_id: str, key: str) -> Submission | None:
        async with self.engine.connect() as conn:
            row = (
                (
                    await conn.execute(
                        select(submissions).where(
                            submissions.c.form_id == form_id, submissions.c.idempotency_key == key
                        )
                    )
                )
                .mappings()
                .first()
            )
        return _row(row) if row else None

    # ------------------------------------------------------------------ reads

    async def get(self, submission_id: str) -> Submission | None:
        async with self.engine.connect() as conn:
            row = (
                (await conn.execute(select(submissions).where(submissions.c.id == submission_id)))
                .mappings()
                .first()
            )
        return _row(row) if row else None

    async def attempts_of(self, submission_id: str) -> list[AttemptRecord]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(attempts)
                    .where(attempts.c.submission_id == submission_id)
                    .order_by(attempts.c.id)
                )
            ).mappings()
            return [
                AttemptRecord(
                    attempt=r["attempt"],
                    started_at=r["started_at"],
                    finished_at=r["finished_at"],
                    outcome=r["outcome"],
                    error_code=r["error_code"],
                    excerpt=r["excerpt"],
                )
                for r in rows
            ]

    async def count_by_status(self) -> dict[Status, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(submissions.c.status, func.count()).group_by(submissions.c.status)
            )
            counts = {status: 0 for status in Status}
            for status, count in rows:
                counts[Status(status)] = int(count)
            return counts

    async def activity(
        self, *, since: datetime, until: datetime, bucket: timedelta
    ) -> list[tuple[datetime, int, int]]:
        """Submissions received and delivered per time bucket: (bucket start, received,
        delivered), oldest first, spam left out."""
        count = max(1, int((until - since) / bucket))
        received = [0] * count
        delivered = [0] * count

        def slot(moment: datetime | None) -> int | None:
            if moment is None or moment < since or moment >= until:
                return None
            return min(int((moment - since) / bucket), count - 1)

        query = select(submissions.c.created_at, submissions.c.delivered_at).where(
            submissions.c.status != Status.SPAM.value,
            or_(submissions.c.created_at >= since, submissions.c.delivered_at >= since),
        )
        async with self.engine.connect() as conn:
            for created, done in await conn.execute(query):
                if (i := slot(created)) is not None:
                    received[i] += 1
                if (i := slot(done)) is not None:
                    delivered[i] += 1
        return [(since + bucket * i, received[i], delivered[i]) for i in range(count)]

    async def created_since(self, form_id: str, since: datetime) -> tuple[int, datetime | None]:
        """How many submissions of a form (spam included) were created since then, and when
        the oldest of them was."""
        query = select(func.count(), func.min(submissions.c.created_at)).where(
            submissions.c.form_id == form_id, submissions.c.created_at >= since
        )
        async with self.engine.connect() as conn:
            count, oldest = (await conn.execute(query)).one()
        return int(count), UTCDateTime().process_result_value(oldest, self.engine.dialect)

    def data_directory(self) -> Path | None:
        """The folder holding the SQLite file (what fills up when the disk does), else None."""
        url = self.engine.url
        if url.get_backend_name() != "sqlite" or not url.database:
            return None
        if url.database == ":memory:" or url.database.startswith("file:"):
            return None
        return Path(url.database).expanduser().resolve().parent

    async def oldest_undelivered(self) -> datetime | None:
        """When the oldest submission still waiting for delivery was accepted, if any."""
        async with self.engine.connect() as conn:
            oldest = (
                await conn.execute(
                    select(func.min(submissions.c.created_at)).where(
                        submissions.c.status.in_([Status.ACCEPTED.value, Status.DELIVERING.value])
                    )
                )
            ).scalar_one()
        return UTCDateTime().process_result_value(oldest, self.engine.dialect)

    async def oldest_due(self, *, now: datetime) -> datetime | None:
        """Since when the longest-waiting due submission could have been claimed, if any is
        due: its next attempt time, or the end of an expired lease when that is later. A time
        long past means no worker takes due work (the portal is down, or no worker runs)."""
        due_since = case(
            (
                and_(
                    submissions.c.lease_until.is_not(None),
                    submissions.c.lease_until > submissions.c.next_attempt_at,
                ),
                submissions.c.lease_until,
            ),
            else_=submissions.c.next_attempt_at,
        )
        async with self.engine.connect() as conn:
            oldest = (
                await conn.execute(
                    select(func.min(due_since)).where(
                        submissions.c.status.in_([Status.ACCEPTED.value, Status.DELIVERING.value]),
                        submissions.c.next_attempt_at <= now,
                        or_(submissions.c.lease_until.is_(None), submissions.c.lease_until <= now),
                    )
                )
            ).scalar_one()
        return UTCDateTime().process_result_value(oldest, self.engine.dialect)

    async def search(
        self,
        *,
        status: Status | None = None,
        form_id: str | None = None,
        created_from: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page:
        """Newest first; `created_from` inclusive, `created_before` exclusive."""
        conditions = []
        if status is not None:
            conditions.append(submissions.c.status == status.value)
        if form_id is not None:
            conditions.append(submissions.c.form_id == form_id)
        if created_from is not None:
            conditions.append(submissions.c.created_at >= created_from)
        if created_before is not None:
            conditions.append(submissions.c.created_at < created_before)
        where = and_(*conditions) if conditions else None
        query = select(submissions).order_by(submissions.c.created_at.desc(), submissions.c.id)
        count = select(func.count()).select_from(submissions)
        if where is not None:
            query, count = query.where(where), count.where(where)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).mappings()
            items = [_row(r) for r in rows]
            total = int((await conn.execute(count)).scalar_one())
        return Page(items=items, total=total)

    # ------------------------------------------------------------------ the worker

    async def claim_due(self, *, now: datetime, limit: int, lease: timedelta) -> list[Submission]:
        """Lease up to `limit` due submissions to the caller.

        A row whose lease expired was claimed by a worker that never recorded an outcome (it
        crashed or hung mid-call): its creates may have happened, so it comes back flagged
        `outcome_unknown` and delivery looks the records up before creating them again. The
        worker keeps each lease past the time the portal could still be running its last
        request (`extend_leases`), so a look-up after the lease is safe.
        """
        due = (
            select(submissions.c.id)
            .where(
                submissions.c.status.in_([Status.ACCEPTED.value, Status.DELIVERING.value]),
                submissions.c.next_attempt_at <= now,
                or_(submissions.c.lease_until.is_(None), submissions.c.lease_until <= now),
            )
            .order_by(submissions.c.next_attempt_at, submissions.c.created_at)
            .limit(limit)
            # PostgreSQL: concurrent workers skip each other's rows; SQLite ignores it
            # (one writer at a time anyway).
            .with_for_update(skip_locked=True)
        )
        async with self._writer.begin() as conn:
            ids = list((await conn.execute(due)).scalars())
            if not ids:
                return []
            await conn.execute(
                update(submissions)
                .where(submissions.c.id.in_(ids))
                .values(
                    status=Status.DELIVERING.value,
                    outcome_unknown=or_(
                        submissions.c.outcome_unknown, submissions.c.lease_until.is_not(None)
                    ),
                    lease_until=now + lease,
                    attempts=submissions.c.attempts + 1,
                    updated_at=now,
                )
            )
            rows = (
                await conn.execute(
                    select(submissions)
                    .where(submissions.c.id.in_(ids))
                    .order_by(submissions.c.next_attempt_at, submissions.c.created_at)
                )
            ).mappings()
            return [_row(r) for r in rows]

    async def extend_leases(self, ids: Sequence[str], *, until: datetime) -> None:
        """Keep these claimed submissions leased until at least `until` (before each request
        the worker sends for them: a crash must not free them while the portal may still be
        running that request)."""
        if not ids:
            return
        async with self._writer.begin() as conn:
            await conn.execute(
                update(submissions)
                .where(
                    submissions.c.id.in_(list(ids)),
                    submissions.c.status == Status.DELIVERING.value,
                    submissions.c.lease_until.is_not(None),
                    submissions.c.lease_until < until,
                )
                .values(lease_until=until)
            )

    async def release_backlog(self, *, now: datetime, codes: Sequence[str]) -> int:
        """Make due now every submission that waits only because the portal was down: its last
        error has one of `codes` and no outcome is unknown (those keep their wait). Returns
        how many were released."""
        async with self._writer.begin() as conn:
            result = await conn.execute(
                update(submissions)
                .where(
                    submissions.c.status == Status.DELIVERING.value,
                    submissions.c.lease_until.is_(None),
                    submissions.c.outcome_unknown.is_(False),
                    submissions.c.next_attempt_at > now,
                    submissions.c.last_error_code.in_(list(codes)),
                )
                .values(next_attempt_at=now, updated_at=now)
            )
            return int(result.rowcount)

    async def record_outcomes(self, outcomes: Sequence[Outcome], *, now: datetime) -> None:
        """Record what one delivery pass did to each submission, in one transaction.

        Delivered: the Bitrix ids, status `delivered`. Retry: the next attempt time (a decision,
        never a sleep), the error, progress so far. Failed: status `failed` with the error.
        `outcome_unknown` replaces the stored flag: the worker knows whether a create may have
        run unseen (True) or whether look-ups settled it (False).
        """
        if not outcomes:
            return
        async with self._writer.begin() as conn:
            for outcome in outcomes:
                await self._record(conn, outcome, now=now)

    async def _record(self, conn: AsyncConnection, outcome: Outcome, *, now: datetime) -> None:
        values: dict[str, object] = {"lease_until": None, "updated_at": now}
        if outcome.bitrix_ids:
            current = (
                await conn.execute(
                    select(submissions.c.bitrix_ids).where(submissions.c.id == outcome.id)
                )
            ).scalar_one()
            values["bitrix_ids"] = {**(current or {}), **outcome.bitrix_ids}
        if outcome.trace_problem is not None:
            values["trace_problem"] = outcome.trace_problem
        if outcome.attempt.outcome == "delivered":
            # The errors of earlier attempts are history (kept per attempt); on the row they
            # would read as the reason of a problem that no longer exists.
            values.update(
                status=Status.DELIVERED.value,
                outcome_unknown=False,
                delivered_at=now,
                last_error=None,
                last_error_code=None,
            )
        else:
            values.update(
                status=(
                    Status.FAILED.value
                    if outcome.attempt.outcome == "failed"
                    else Status.DELIVERING.value
                ),
                outcome_unknown=outcome.outcome_unknown,
                last_error=_excerpt(outcome.error),
                last_error_code=outcome.attempt.error_code,
            )
            if outcome.next_attempt_at is not None:
                values["next_attempt_at"] = outcome.next_attempt_at
        await conn.execute(
            update(submissions).where(submissions.c.id == outcome.id).values(**values)
        )
        record = outcome.attempt
        await conn.execute(
            attempts.insert().values(
                submission_id=outcome.id,
                attempt=record.attempt,
                started_at=record.started_at,
                finished_at=record.finished_at,
                outcome=record.outcome,
                error_code=record.error_code,
                excerpt=_excerpt(record.excerpt),
            )
        )

    async def requeue(self, submission_id: str, *, now: datetime) -> bool:
        """Make a failed submission due again (a retry by hand). False if it is not failed, or
        retention erased it.

        The retry horizon restarts from now: the operator asked for another round.
        """
        return await self._requeue(submissions.c.id == submission_id, now=now) == 1

    async def requeue_failed(self, *, now: datetime) -> int:
        """Make every failed submission (not erased) due again; returns how many."""
        return await self._requeue(None, now=now)

    async def _requeue(self, condition: Any, *, now: datetime) -> int:
        query = update(submissions).where(
            submissions.c.status == Status.FAILED.value,
            # An erased submission has nothing left to deliver.
            submissions.c.body_hash != ERASED,
        )
        if condition is not None:
            query = query.where(condition)
        async with self._writer.begin() as conn:
            result = await conn.execute(
                query.values(
                    status=Status.DELIVERING.value,
                    next_attempt_at=now,
                    lease_until=None,
                    retry_from=now,
                    updated_at=now,
                )
            )
            return int(result.rowcount)

    # ------------------------------------------------------------------ privacy

    async def erase_personal_data(
        self,
        *,
        finished_before: datetime,
        failed_before: datetime,
        now: datetime,
        limit: int = 500,
    ) -> int:
        """Erase the personal data of up to `limit` settled submissions; returns how many.

        Delivered (the portal has the data now) and spam (never delivered) submissions created
        before `finished_before`; failed ones whose retry horizon started (acceptance, or the
        last retry by hand) before `failed_before`. The posted fields, the trace, the CRM
        values, the idempotency key (the client chose it: it may be an e-mail), the last error
        and the answer excerpts of every attempt go; ids, statuses, timestamps, error codes
        and the Bitrix ids stay. The body hash becomes a marker, so an erased row is not
        selected again and a failed one can no longer be retried by hand.
        """
        failed_since = func.coalesce(submissions.c.retry_from, submissions.c.created_at)
        async with self._writer.begin() as conn:
            rows = (
                await conn.execute(
                    select(submissions.c.id, submissions.c.crm)
                    .where(
                        or_(
                            and_(
                                submissions.c.status.in_(
                                    [Status.DELIVERED.value, Status.SPAM.value]
                                ),
                                submissions.c.created_at < finished_before,
                            ),
                            and_(
                                submissions.c.status == Status.FAILED.value,
                                # Implied by the next line (a retry comes after acceptance);
                                # spelled out so the created_at index narrows the scan.
                                submissions.c.created_at < failed_before,
                                failed_since < failed_before,
                            ),
                        ),
                        submissions.c.body_hash != ERASED,
                    )
                    .order_by(submissions.c.created_at)
                    .limit(limit)
                )
            ).all()
            for submission_id, crm in rows:
                await conn.execute(
                    update(submissions)
                    .where(submissions.c.id == submission_id)
                    .values(
                        fields={},
                        crm=_erased_crm(crm),
                        trace=None,
                        idempotency_key=None,
                        last_error=None,
                        client_key=None,
                        body_hash=ERASED,
                        updated_at=now,
                    )
                )
            if rows:
                await conn.execute(
                    update(attempts)
                    .where(attempts.c.submission_id.in_([r[0] for r in rows]))
                    .values(excerpt=None)
                )
                self._erasure_unsettled = True
            return len(rows)

    async def settle_erasure(self) -> bool:
        """Make what `erase_personal_data` erased unreadable in the database files too.

        SQLite: the old pages stay in the write-ahead log (and the main file keeps them until
        a checkpoint copies the new ones over), so a TRUNCATE checkpoint copies every logged
        page into the main file, where secure_delete zeroed the erased values, and empties the
        log. PostgreSQL keeps the old row versions as dead tuples until (auto)vacuum makes
        their space reusable; nothing here speeds that up (docs/design.md, Retention).
        Returns False when the checkpoint could not finish (a reader held an old snapshot);
        the next call tries again.
        """
        if self.engine.dialect.name != "sqlite" or not self._erasure_unsettled:
            return True
        # Our own writers wait on the lock instead of in SQLite's busy handler meanwhile. The
        # checkpoint blocks every writer while it waits for readers, so it waits briefly: an
        # intake stalled for the full busy timeout would cost more than a retry in an hour.
        async with self._writer.exclusive(), self.engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await autocommit.exec_driver_sql(f"PRAGMA busy_timeout={CHECKPOINT_WAIT_MS}")
            try:
                # (busy, frames in the log, frames copied): busy = 1 when it could not finish.
                result = await autocommit.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
                busy = bool(result.one()[0])
            finally:
                await autocommit.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        self._erasure_unsettled = busy
        return not busy


ERASED = "erased"


def _erased_crm(crm: Mapping[str, Any] | None) -> dict[str, Any]:
    """The mapped CRM data without a value: which records the submission made, nothing else."""
    crm = crm or {}
    records = crm.get("records")
    return {
        "entity": crm.get("entity"),
        "main": crm.get("main"),
        "records": {role: {} for role in records} if isinstance(records, dict) else {},
        "match": {},
        "utm": {},
    }
