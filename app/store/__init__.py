"""The database: schema, migrations, and every state change of a submission."""

from app.store.db import create_engine, migrate
from app.store.leader import Leadership
from app.store.submissions import (
    AttemptRecord,
    Enqueued,
    NewSubmission,
    Outcome,
    Page,
    Store,
    Submission,
)
from app.store.tables import Status

__all__ = [
    "AttemptRecord",
    "Enqueued",
    "Leadership",
    "NewSubmission",
    "Outcome",
    "Page",
    "Status",
    "Store",
    "Submission",
    "create_engine",
    "migrate",
]
