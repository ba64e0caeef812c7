"""The store on every supported database: migrations, enqueue, claim and lease, outcomes.

SQLite always; PostgreSQL too when TEST_DATABASE_URL points at a server (CI sets it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.store import (
    AttemptRecord,
    NewSubmission,
    Outcome,
    Status,
    Store,
    create_engine,
    migrate,
)
from app.store.tables import metadata

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)


@pytest.fixture
async def store(backend_database_url: str) -> AsyncIterator[Store]:
    engine = create_engine(backend_database_url)
    await migrate(engine)
    yield Store(engine)
    await engine.dispose()


def new(submission_id: str, *, key: str | None = None, body: str = "h") -> NewSubmission:
    return NewSubmission(
        id=submission_id,
        form_id="contact",
        entity="lead",
        fields={"phone": ["+15550001111"]},
        crm={"entity": "lead", "main": "lead", "records": {"lead": {"TITLE": "x"}}},
        body_hash=body,
        idempotency_key=key,
    )


async def test_migrations_create_exactly_the_declared_schema(store: Store) -> None:
    def diff(sync_conn: object) -> list[object]:
        context = MigrationContext.configure(sync_conn)  # type: ignore[arg-type]
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
    await migrate(store.engine)  # running them again changes nothing


async def test_enqueue_with_a_used_key_returns_the_first_submission(store: Store) -> None:
    first = await store.enqueue(new("a", key="k"), now=T0)
    again = await store.enqueue(new("b", key="k", body="other"), now=T0)
    assert first.created and not again.created
    assert again.submission.id == "a" and again.submission.body_hash == "h"
    # The key is scoped to the form.
    other = new("c", key="k")
    other_form = await store.enqueue(
        NewSubmission(**{f: getattr(other, f) for f in other.__slots__} | {"form_id": "order"}),
        now=T0,
    )
    assert other_form.created
    assert (await store.search()).total == 2


async def test_claim_leases_due_rows_once(store: Store) -> None:
    for i in range(5):
        await store.enqueue(new(f"s{i}"), now=T0)
    first = await store.claim_due(now=T0, limit=3, lease=LEASE)
    second = await store.claim_due(now=T0, limit=10, lease=LEASE)
    assert len(first) == 3 and len(second) == 2
    assert {s.id for s in first}.isdisjoint({s.id for s in second})
    assert all(s.status is Status.DELIVERING and s.attempts == 1 for s in first + second)
    assert await store.claim_due(now=T0 + timedelta(seconds=5), limit=10, lease=LEASE) == []


async def test_an_expired_lease_is_reclaimed_with_its_outcome_unknown(store: Store) -> None:
    await store.enqueue(new("s"), now=T0)
    [claimed] = await store.claim_due(now=T0, limit=1, lease=LEASE)
    assert not claimed.outcome_unknown
    # The worker died mid-call: no outcome was recorded before the lease ran out.
    [again] = await store.claim_due(now=T0 + LEASE, limit=1, lease=LEASE)
    assert again.id == "s" and again.attempts == 2 and again.outcome_unknown


async def test_outcomes_move_the_state_and_keep_every_attempt(store: Store) -> None:
    for name in ("ok", "later", "bad"):
        await store.enqueue(new(name), now=T0)
    await store.claim_due(now=T0, limit=3, lease=LEASE)
    t1 = T0 + timedelta(seconds=1)
    await store.record_outcomes(
        [
            Outcome("ok", AttemptRecord(1, T0, t1, "delivered"), bitrix_ids={"lead": 7}),
            Outcome(
                "later",
                AttemptRecord(1, T0, t1, "retry", "Unreachable", "down"),
                next_attempt_at=t1 + timedelta(seconds=10),
                error="cannot connect",
                outcome_unknown=True,
                bitrix_ids={"company": 3},
            ),
            Outcome("bad", AttemptRecord(1, T0, t1, "failed", "insufficient_scope"), error="scope"),
        ],
        now=t1,
    )
    ok, later, bad = [await store.get(i) for i in ("ok", "later", "bad")]
    assert ok and ok.status is Status.DELIVERED and ok.bitrix_ids == {"lead": 7}
    assert later and later.status is Status.DELIVERING and later.outcome_unknown
    assert later.bitrix_ids == {"company": 3} and later.lease_until is None
    assert bad and bad.status is Status.FAILED and bad.last_error_code == "insufficient_scope"
    assert await store.claim_due(now=t1, limit=5, lease=LEASE) == []
    [due] = await store.claim_due(now=t1 + timedelta(seconds=10), limit=5, lease=LEASE)
    assert due.id == "later"
    attempts = await store.attempts_of("later")
    assert [(a.outcome, a.error_code) for a in attempts] == [("retry", "Unreachable")]


async def test_a_retry_by_hand_requeues_failed_ones_and_restarts_the_horizon(store: Store) -> None:
    for name in ("a", "b"):
        await store.enqueue(new(name), now=T0)
    await store.claim_due(now=T0, limit=2, lease=LEASE)
    failed = [Outcome(n, AttemptRecord(1, T0, T0, "failed", "X"), error="x") for n in ("a", "b")]
    await store.record_outcomes(failed, now=T0)
    later = T0 + timedelta(days=5)
    assert await store.requeue("a", now=later)
    assert not await store.requeue("a", now=later)  # not failed any more
    assert await store.requeue_failed(now=later) == 1
    rows = await store.claim_due(now=later, limit=5, lease=LEASE)
    assert {r.id for r in rows} == {"a", "b"}
    assert all(r.horizon_start == later for r in rows)


async def test_release_backlog_frees_only_what_waited_for_the_portal(store: Store) -> None:
    for name in ("down", "unknown", "rejected", "leased"):
        await store.enqueue(new(name), now=T0)
    claimed = await store.claim_due(now=T0, limit=10, lease=LEASE)
    later = T0 + timedelta(minutes=10)

    def outcome(submission_id: str, code: str, *, unknown: bool = False) -> Outcome:
        record = AttemptRecord(1, T0, T0, "retry", code)
        return Outcome(submission_id, record, next_attempt_at=later, outcome_unknown=unknown)

    await store.record_outcomes(
        [
            outcome("down", "Unavailable"),
            outcome("unknown", "Unreachable", unknown=True),
            outcome("rejected", "ERROR_CORE"),
        ],
        now=T0,
    )
    assert {s.id for s in claimed} == {"down", "unknown", "rejected", "leased"}
    released = await store.release_backlog(now=T0, codes=["Unavailable", "Unreachable"])
    assert released == 1
    due = {s.id for s in await store.claim_due(now=T0, limit=10, lease=LEASE)}
    assert due == {"down"}  # "leased" is still held by its worker


async def test_oldest_due_is_since_when_the_longest_waiting_due_submission_could_be_claimed(
    store: Store,
) -> None:
    assert await store.oldest_due(now=T0) is None
    await store.enqueue(new("a"), now=T0)
    await store.enqueue(new("b"), now=T0 + timedelta(seconds=10))
    assert await store.oldest_due(now=T0 + timedelta(seconds=60)) == T0
    claimed = await store.claim_due(now=T0 + timedelta(seconds=60), limit=2, lease=LEASE)
    assert [s.id for s in claimed] == ["a", "b"]
    retry = AttemptRecord(1, T0, T0, "retry", "QUERY_LIMIT_EXCEEDED")
    await store.record_outcomes(
        [Outcome("b", retry, next_attempt_at=T0 + timedelta(seconds=200))],
        now=T0 + timedelta(seconds=61),
    )
    # Leased or waiting for its retry time: not due, whatever its age.
    assert await store.oldest_due(now=T0 + timedelta(seconds=80)) is None
    # A lease that ran out (a worker that never answered): due since the lease ended.
    assert await store.oldest_due(now=T0 + timedelta(seconds=250)) == T0 + timedelta(seconds=90)
