"""The database schema as SQLAlchemy Core tables, and the submission status enum.

Migrations (app/store/migrations) create this schema; this module only describes it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class Status(StrEnum):
    """Where a submission stands. Only the worker moves it past `accepted`."""

    ACCEPTED = "accepted"
    """Committed and answered; waiting for its first delivery attempt."""
    DELIVERING = "delivering"
    """Claimed by a worker, or waiting for a retry after a transient failure."""
    DELIVERED = "delivered"
    """Every record exists in the portal; the Bitrix ids are recorded."""
    FAILED = "failed"
    """A permanent error, or the retry horizon passed; retryable by hand."""
    SPAM = "spam"
    """Caught by the honeypot, fill time or captcha; answered as a success, never delivered.
    Only evidence is kept: form, reason, time, client key and the content's hash."""


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite returns naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

submissions = Table(
    "submissions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("form_id", String(64), nullable=False),
    Column("entity", String(16), nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # Idempotency: the key is scoped to the form; the hash tells a replay from a conflict.
    Column("idempotency_key", String(255), nullable=True),
    Column("body_hash", String(64), nullable=False),
    # The submission as it arrived (field -> values) and the CRM fields mapped from it.
    Column("fields", JSON, nullable=False),
    Column("crm", JSON, nullable=False),
    # The trace to send (the getTrace() string or a trace id); problem = why one was not kept.
    Column("trace", Text, nullable=True),
    Column("trace_is_id", Boolean, nullable=False, default=False),
    Column("trace_problem", String(64), nullable=True),
    # Delivery progress.
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_until", UTCDateTime(), nullable=True),
    # Set when a create call may or may not have happened: look up by ORIGIN_ID before re-creating.
    Column("outcome_unknown", Boolean, nullable=False, default=False),
    Column("last_error", Text, nullable=True),
    Column("last_error_code", String(64), nullable=True),
    Column("bitrix_ids", JSON, nullable=False),
    Column("delivered_at", UTCDateTime(), nullable=True),
    # Set by a retry by hand: the retry horizon counts from here instead of created_at.
    Column("retry_from", UTCDateTime(), nullable=True),
    # Spam is kept as evidence, not as payload: why it is spam and who sent it (the rate-limit
    # key: an IPv4 address or an IPv6 /64); its fields, CRM values and trace are not stored.
    Column("spam_reason", String(64), nullable=True),
    Column("client_key", String(64), nullable=True),
    UniqueConstraint("form_id", "idempotency_key", name="uq_submissions_form_key"),
    Index("ix_submissions_due", "status", "next_attempt_at"),
    Index("ix_submissions_created", "created_at"),
    # The storage budget counts a form's rows of the last hour.
    Index("ix_submissions_form_created", "form_id", "created_at"),
)

attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "submission_id",
        String(36),
        ForeignKey("submissions.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempt", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime(), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("excerpt", Text, nullable=True),
    Index("ix_attempts_submission", "submission_id"),
)
