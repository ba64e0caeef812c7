"""The database: schema, migrations, and every state change of a submission."""

from app.store.db import (
    DatabaseUnavailable,
    create_engine,
    database_problem,
    migrate,
    missing_sqlite_file,
    schema_state,
)
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
    "DatabaseUnavailable",
    "Enqueued",
    "Leadership",
    "NewSubmission",
    "Outcome",
    "Page",
    "Status",
    "Store",
    "Submission",
    "create_engine",
    "database_problem",
    "migrate",
    "missing_sqlite_file",
    "schema_state",
]
