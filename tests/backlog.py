"""A backlog for tests: accepted leads put straight into the queue, as after an outage."""

from __future__ import annotations

from datetime import UTC, datetime

from app.forms import load_forms, map_submission
from app.store import NewSubmission, Store, create_engine, migrate


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
