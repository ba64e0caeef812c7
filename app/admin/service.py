"""What the admin API and the `submissions` CLI do, written once: list, show (the one JSON
serialisation of a submission), dry run and retry by hand. Reads and writes only through the store.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Literal, TypedDict

from pydantic import SecretStr

from app.admin.throttle import FailedLogins
from app.intake.clientip import ClientResolver
from app.store import AttemptRecord, Status, Store, Submission

log = logging.getLogger("app.admin")

Preview = Callable[[Submission], list[dict[str, str]]]
# A submission in these states has a next attempt; the others send nothing more.
PENDING = frozenset({Status.ACCEPTED, Status.DELIVERING, Status.FAILED})
MAX_LIMIT = 500
# A webhook path (`/rest/USER_ID/SECRET/...`) echoed by a proxy's error page ends up in an error
# excerpt; the secret segment is masked wherever error text is shown.
_WEBHOOK_PATH = re.compile(r"(/rest/\d+/)[^/\s\"'<>?#&]+")
MASK = "***"


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class AdminContext:
    """What admin needs, built by main.py (the only place that knows delivery and settings).

    `token` is None for the CLI, which needs none; the HTTP routes then refuse everything.
    `preview` gives the commands a submission's next attempt would send; `on_requeued` wakes the
    worker after a retry by hand, and `portal_state` gives the worker's portal breaker state
    (both set by the lifespan once the worker exists; None when this process delivers nothing).
    `failures` counts wrong tokens per client (main.py gives it the TRUSTED_PROXIES resolver).
    `timezone` is the one the operator pages show times in (ADMIN_TIMEZONE).
    """

    store: Store
    token: SecretStr | None
    preview: Preview
    clock: Callable[[], datetime] = utcnow
    on_requeued: Callable[[], None] = lambda: None
    portal_state: Callable[[], Mapping[str, object] | None] = lambda: None
    failures: FailedLogins = field(default_factory=lambda: FailedLogins(ClientResolver(())))
    timezone: tzinfo = UTC


class Listing(TypedDict):
    """A page of `GET /admin/submissions`."""

    items: list[dict[str, object]]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True, slots=True)
class Requeued:
    """The result of a retry by hand: `requeued`, or why not (`status` is the current one)."""

    result: Literal["requeued", "not_found", "not_failed"]
    status: Status | None = None


# --------------------------------------------------------------------------- serialisation


def mask_secrets(text: str | None) -> str | None:
    if text is None:
        return None
    return _WEBHOOK_PATH.sub(lambda m: m.group(1) + MASK, text)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def summary(sub: Submission) -> dict[str, object]:
    """A list item: state and progress only, no personal data."""
    return {
        "id": sub.id,
        "form_id": sub.form_id,
        "entity": sub.entity,
        "status": sub.status.value,
        "created_at": _iso(sub.created_at),
        "updated_at": _iso(sub.updated_at),
        "attempts": sub.attempts,
        "next_attempt_at": _iso(sub.next_attempt_at) if _has_next(sub) else None,
        "last_error_code": sub.last_error_code,
        "bitrix_ids": dict(sub.bitrix_ids),
        "trace_problem": sub.trace_problem,
        "spam_reason": sub.spam_reason,
    }


def _has_next(sub: Submission) -> bool:
    return sub.status in (Status.ACCEPTED, Status.DELIVERING)


def _attempt(record: AttemptRecord) -> dict[str, object]:
    return {
        "attempt": record.attempt,
        "started_at": _iso(record.started_at),
        "finished_at": _iso(record.finished_at),
        "outcome": record.outcome,
        "error_code": record.error_code,
        "excerpt": mask_secrets(record.excerpt),
    }


def commands_of(ctx: AdminContext, sub: Submission) -> list[dict[str, str]]:
    """What the next attempt would send: nothing for a delivered or spam submission."""
    return ctx.preview(sub) if sub.status in PENDING else []


async def show(ctx: AdminContext, submission_id: str) -> dict[str, object] | None:
    """The whole submission as the admin API and `submissions show` print it; None if unknown."""
    sub = await ctx.store.get(submission_id)
    if sub is None:
        return None
    attempts = await ctx.store.attempts_of(submission_id)
    return {
        **summary(sub),
        "last_error": mask_secrets(sub.last_error),
        "outcome_unknown": sub.outcome_unknown,
        "delivered_at": _iso(sub.delivered_at),
        "fields": sub.fields,
        "crm": sub.crm,
        "trace": sub.trace,
        "trace_is_id": sub.trace_is_id,
        # Spam keeps only evidence: who sent it (the rate-limit key) and its content's hash.
        **(
            {"client_key": sub.client_key, "content_sha256": sub.body_hash}
            if sub.status is Status.SPAM
            else {}
        ),
        "delivery_attempts": [_attempt(a) for a in attempts],
        "commands": commands_of(ctx, sub),
    }


# --------------------------------------------------------------------------- operations


async def search(
    ctx: AdminContext,
    *,
    status: Status | None = None,
    form_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> Listing:
    """Newest first; `since` inclusive, `until` exclusive."""
    page = await ctx.store.search(
        status=status,
        form_id=form_id,
        created_from=since,
        created_before=until,
        limit=limit,
        offset=offset,
    )
    return {
        "items": [summary(s) for s in page.items],
        "total": page.total,
        "limit": limit,
        "offset": offset,
    }


async def dry_run(ctx: AdminContext, submission_id: str) -> dict[str, object] | None:
    sub = await ctx.store.get(submission_id)
    if sub is None:
        return None
    return {"id": sub.id, "status": sub.status.value, "commands": commands_of(ctx, sub)}


async def retry(ctx: AdminContext, submission_id: str) -> Requeued:
    """Make one failed submission due now (its retry horizon restarts)."""
    if await ctx.store.requeue(submission_id, now=ctx.clock()):
        log.info("admin.requeued", extra={"submission_id": submission_id})
        ctx.on_requeued()
        return Requeued("requeued", Status.DELIVERING)
    current = await ctx.store.get(submission_id)
    if current is None:
        return Requeued("not_found")
    return Requeued("not_failed", current.status)


async def retry_failed(ctx: AdminContext) -> int:
    count = await ctx.store.requeue_failed(now=ctx.clock())
    log.info("admin.requeued_failed", extra={"count": count})
    if count:
        ctx.on_requeued()
    return count
