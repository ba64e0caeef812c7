"""`/admin/submissions...`: list, show, dry run and retry by hand, behind a bearer token.

Thin: each route parses its input, calls `app.admin.service`, and answers JSON. Mounted by
`install()` only when ADMIN_TOKEN is set; without it every `/admin` path is a plain 404.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request
from fastapi.responses import JSONResponse, Response

from app.admin import service
from app.admin.service import MAX_LIMIT, AdminContext
from app.store import Status


class AdminError(Exception):
    """An admin request that cannot be answered: JSON `{"error": message}` with this status."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def install(app: FastAPI, context: AdminContext) -> None:
    """Mount the admin API on `app`; call only when an admin token is configured.

    Out of the public OpenAPI document: it would show strangers what the token opens.
    """
    from app.admin.dashboard import router as dashboard_router  # it builds on this module
    from app.admin.pages import router as pages_router  # and so does this one

    app.state.admin = context
    app.include_router(router, include_in_schema=False)
    app.include_router(dashboard_router, include_in_schema=False)
    app.include_router(pages_router, include_in_schema=False)

    # Its own handler: the app's HTTPException handler would drop WWW-Authenticate.
    async def _admin_error(_: Request, exc: Exception) -> Response:
        if not isinstance(exc, AdminError):  # registered for AdminError only
            raise exc
        return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)

    app.add_exception_handler(AdminError, _admin_error)


# --------------------------------------------------------------------------- dependencies


def _context(request: Request) -> AdminContext:
    context: AdminContext = request.app.state.admin
    return context


ContextDep = Annotated[AdminContext, Depends(_context)]


def authorize(ctx: AdminContext, request: Request, *, valid: bool, refusal: AdminError) -> None:
    """Let a valid token through, else count the failure and raise `refusal`; a client with
    too many recent failures gets 429 whatever it sends, so the answer to a right guess does
    not tell it apart. A request without credentials is no guess (a browser's first visit to
    the dashboard, before it asks for the password): refused, not counted."""
    key = ctx.failures.client_key(request)
    wait = ctx.failures.wait(key)
    if wait is not None:
        raise AdminError(
            429,
            "too many failed admin logins from this client; try again later",
            headers={"Retry-After": str(wait)},
        )
    if not valid:
        if request.headers.get("authorization", "").strip():
            ctx.failures.failed(key)
        raise refusal


def require_token(
    ctx: ContextDep, request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    """`Authorization: Bearer <ADMIN_TOKEN>`, compared in constant time; never echoed."""
    scheme, _, given = (authorization or "").partition(" ")
    expected = ctx.token.get_secret_value() if ctx.token is not None else ""
    valid = (
        bool(expected)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), expected.encode())
    )
    refusal = AdminError(
        401,
        "a valid admin token is required: Authorization: Bearer <ADMIN_TOKEN>",
        headers={"WWW-Authenticate": "Bearer"},
    )
    authorize(ctx, request, valid=valid, refusal=refusal)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    status: Status | None
    form_id: str | None
    since: datetime | None
    until: datetime | None
    limit: int
    offset: int


def _search_query(
    status: Annotated[str | None, Query(description="accepted, delivering, ...")] = None,
    form: Annotated[str | None, Query(description="form id")] = None,
    since: Annotated[str | None, Query(description="ISO-8601, inclusive; naive = UTC")] = None,
    until: Annotated[str | None, Query(description="ISO-8601, exclusive; naive = UTC")] = None,
    limit: Annotated[str, Query(description=f"1..{MAX_LIMIT}")] = "50",
    offset: Annotated[str, Query(description="0 or more")] = "0",
) -> SearchQuery:
    return SearchQuery(
        status=status_param(status),
        form_id=form or None,
        since=_datetime("since", since),
        until=_datetime("until", until),
        limit=integer_param("limit", limit, low=1, high=MAX_LIMIT),
        offset=integer_param("offset", offset, low=0, high=None),
    )


SearchDep = Annotated[SearchQuery, Depends(_search_query)]


def status_param(value: str | None) -> Status | None:
    """A `status` query parameter (empty: any); 422 naming the choices."""
    if not value:
        return None
    try:
        return Status(value)
    except ValueError:
        choices = ", ".join(s.value for s in Status)
        raise AdminError(422, f"status: must be one of {choices}") from None


# "+02:00" arrives as " 02:00" when the client did not URL-encode the plus sign.
_UNENCODED_OFFSET = re.compile(r" (\d{2}:?\d{2})$")


def _datetime(name: str, value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(_UNENCODED_OFFSET.sub(r"+\1", value.strip()))
    except ValueError:
        raise AdminError(422, f"{name}: not an ISO-8601 date or datetime") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def integer_param(name: str, value: str, *, low: int, high: int | None) -> int:
    """An integer query parameter within bounds; 422 naming them."""
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low or (high is not None and number > high):
        bounds = f"between {low} and {high}" if high is not None else f"{low} or more"
        raise AdminError(422, f"{name}: must be an integer {bounds}")
    return number


# --------------------------------------------------------------------------- routes

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_token)])


@router.get("/submissions", summary="List submissions, newest first")
async def list_submissions(ctx: ContextDep, query: SearchDep) -> dict[str, object]:
    listing = await service.search(
        ctx,
        status=query.status,
        form_id=query.form_id,
        since=query.since,
        until=query.until,
        limit=query.limit,
        offset=query.offset,
    )
    return dict(listing)


@router.post("/submissions/retry-failed", summary="Requeue every failed submission")
async def retry_failed(ctx: ContextDep) -> dict[str, int]:
    return {"requeued": await service.retry_failed(ctx)}


@router.get("/submissions/{submission_id}", summary="One submission, its attempts and commands")
async def show_submission(ctx: ContextDep, submission_id: str) -> dict[str, object]:
    shown = await service.show(ctx, submission_id)
    if shown is None:
        raise _not_found()
    return shown


@router.get(
    "/submissions/{submission_id}/dry-run", summary="The commands the next attempt would send"
)
async def dry_run(ctx: ContextDep, submission_id: str) -> dict[str, object]:
    planned = await service.dry_run(ctx, submission_id)
    if planned is None:
        raise _not_found()
    return planned


@router.post("/submissions/{submission_id}/retry", summary="Requeue a failed submission")
async def retry(ctx: ContextDep, submission_id: str) -> dict[str, str]:
    outcome = await service.retry(ctx, submission_id)
    if outcome.result == "not_found":
        raise _not_found()
    if outcome.result == "not_failed":
        status = outcome.status.value if outcome.status else "?"
        raise AdminError(409, f"submission is {status}; only a failed one can be retried")
    return {"id": submission_id, "status": Status.DELIVERING.value}


def _not_found() -> AdminError:
    return AdminError(404, "no such submission")
