"""A backlog for tests: accepted leads put straight into the queue, as after an outage, and
the tries a worker left on them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.forms import load_forms, map_submission
from app.store import AttemptRecord, NewSubmission, Outcome, Store, create_engine, migrate


async def enqueue_leads(db_url: str, count: int) -> list[str]:
    """Put `count` accepted leads straight into the queue (a backlog, as after an outage)."""
    engine = create_engine(db_url)
    await migrate(engine)
    store = Store(engine)
    form = load_forms(None)["contact"]
    now = datetime.now(UTC)
    ids = []
    for i in range(count):
        fields = {"phone": [f"+1555300{i:04d}"]}
        submission_id = f"backlog-{i:04d}"
        await store.enqueue(
            NewSubmission(
                id=submission_id,
                form_id="contact",
                entity="lead",
                fields=fields,
                crm=map_submission(form, fields, trace_utm={}),
                body_hash=str(i),
            ),
            now=now,
        )
        ids.append(submission_id)
    await engine.dispose()
    return ids


async def back_off(
    db_url: str,
    codes: dict[str, str],
    *,
    until: datetime,
    unknown: frozenset[str] = frozenset(),
) -> None:
    """Record one failed try of every queued submission (`codes`: id -> error code), as a
    worker leaves it: due again at `until`; those in `unknown` with their outcome unknown."""
    engine = create_engine(db_url)
    store = Store(engine)
    try:
        now = datetime.now(UTC)
        claimed = await store.claim_due(now=now, limit=10_000, lease=timedelta(seconds=1))
        assert {s.id for s in claimed} == set(codes), "back_off: name every queued submission"
        outcomes = [
            Outcome(
                s.id,
                AttemptRecord(1, now, now, "retry", codes[s.id], "a failed try"),
                next_attempt_at=until,
                error="a failed try",
                outcome_unknown=s.id in unknown,
            )
            for s in claimed
        ]
        await store.record_outcomes(outcomes, now=now)
    finally:
        await engine.dispose()
