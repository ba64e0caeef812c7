"""`POST /forms/{form_id}`: validate, store (committed before answering), answer.

The edge is thin: it never builds Bitrix payloads and never calls the portal. It maps fields
through `app.forms`, checks the trace through `app.trace`, and commits through `app.store`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from app.forms import Form, first, map_submission, missing_required, non_empty
from app.intake.body import JSON_TYPE, BodyError, parse_body
from app.metrics import Metrics
from app.settings import Settings
from app.store import NewSubmission, Status, Store, Submission
from app.trace import check_trace

log = logging.getLogger("app.intake")

IDEMPOTENCY_HEADER = "idempotency-key"
KEY_FIELD = "submission_id"


@dataclass(slots=True)
class IntakeContext:
    """What the intake needs, built by main.py."""

    settings: Settings
    forms: Mapping[str, Form]
    store: Store
    on_accepted: Callable[[], None] = lambda: None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    metrics: Metrics | None = None


router = APIRouter()


def _ctx(request: Request) -> IntakeContext:
    ctx: IntakeContext = request.app.state.intake
    return ctx


def error_response(status: int, message: str, errors: Mapping[str, str] | None = None) -> Response:
    content: dict[str, object] = {"error": message}
    if errors:
        content["errors"] = dict(errors)
    headers = {"Retry-After": "5"} if status == 503 else None
    return JSONResponse(content, status_code=status, headers=headers)


@router.post(
    "/forms/{form_id}",
    status_code=202,
    summary="Submit a form",
    responses={
        202: {"description": "Accepted: stored durably, delivery follows"},
        303: {"description": "Accepted (HTML form post): redirect to the form's redirect_url"},
        400: {"description": "Unparsable body or invalid Idempotency-Key"},
        404: {"description": "Unknown form"},
        409: {"description": "Idempotency key reused with a different body"},
        413: {"description": "Body too large"},
        415: {"description": "Unsupported Content-Type or Content-Encoding"},
        422: {"description": "Invalid fields"},
        503: {"description": "The database cannot commit"},
    },
)
async def submit(form_id: str, request: Request) -> Response:
    ctx = _ctx(request)
    request.state.spam = False
    response = await _submit(ctx, form_id, request)
    if ctx.metrics is not None:
        ctx.metrics.submissions.labels(
            # Unknown form ids come from the client: never a label value (cardinality).
            form=form_id if form_id in ctx.forms else "unknown",
            outcome=_outcome(response.status_code, spam=request.state.spam),
        ).inc()
    return response


def _outcome(status: int, *, spam: bool) -> str:
    if spam:
        return "spam"
    if status < 400:
        return "accepted"
    if status in (400, 413, 415, 422):
        return "invalid"
    return "rejected"


async def _submit(ctx: IntakeContext, form_id: str, request: Request) -> Response:
    form = ctx.forms.get(form_id)
    if form is None:
        return error_response(404, f"unknown form {form_id[:64]!r}")
    if (denied := _origin_denied(request, ctx.settings)) is not None:
        return denied
    try:
        body = await parse_body(request, limit=ctx.settings.MAX_BODY_BYTES)
        # The header wins over the field when both are present (DESIGN.md).
        key = _idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
        if key is None:
            key = _idempotency_key(first(body.fields, KEY_FIELD) or None)
    except BodyError as exc:
        return error_response(exc.status, exc.message, exc.errors)
    wants_html = body.kind != JSON_TYPE and "text/html" in request.headers.get("accept", "")
    fields = {k: v for k, v in body.fields.items() if k != KEY_FIELD}

    errors = missing_required(form, fields) | _invalid_contacts(fields)
    if errors:
        return error_response(422, "some fields are invalid", errors)

    trace = check_trace(body.trace, max_bytes=ctx.settings.MAX_TRACE_BYTES)
    body_hash = _hash(fields, body.trace)
    if key is not None and (existing := await _replay(ctx, form, key, body_hash)) is not None:
        return existing if isinstance(existing, Response) else _answer(form, existing, wants_html)

    spam = bool(form.honeypot and first(fields, form.honeypot))
    request.state.spam = spam
    crm = map_submission(form, fields, trace_utm=trace.utm)
    new = NewSubmission(
        id=str(uuid.uuid4()),
        form_id=form.id,
        entity=form.entity.value,
        fields=fields,
        crm=crm,
        body_hash=body_hash,
        idempotency_key=key,
        trace=trace.value,
        trace_is_id=trace.is_id,
        trace_problem=trace.problem.value if trace.problem else None,
        status=Status.SPAM if spam else Status.ACCEPTED,
    )
    try:
        enqueued = await ctx.store.enqueue(new, now=ctx.clock())
    except SQLAlchemyError:
        log.exception("intake.store_failed", extra={"form_id": form.id})
        return error_response(503, "the submission could not be stored; try again")
    stored = enqueued.submission
    if not enqueued.created and stored.body_hash != body_hash:
        return error_response(409, "this idempotency key was used with a different body")
    if enqueued.created:
        log.info(
            "intake.accepted",
            extra={
                "submission_id": stored.id,
                "form_id": form.id,
                "status": stored.status.value,
                "trace_problem": stored.trace_problem,
            },
        )
        if not spam:
            ctx.on_accepted()
    return _answer(form, stored, wants_html)


async def _replay(
    ctx: IntakeContext, form: Form, key: str, body_hash: str
) -> Submission | Response | None:
    try:
        existing = await ctx.store.find_by_key(form.id, key)
    except SQLAlchemyError:
        log.exception("intake.store_failed", extra={"form_id": form.id})
        return error_response(503, "the submission could not be stored; try again")
    if existing is None:
        return None
    if existing.body_hash != body_hash:
        return error_response(409, "this idempotency key was used with a different body")
    return existing


def _answer(form: Form, submission: Submission, wants_html: bool) -> Response:
    if not wants_html:
        return JSONResponse({"id": submission.id, "status": "accepted"}, status_code=202)
    if form.redirect_url:
        return RedirectResponse(form.redirect_url, status_code=303)
    return HTMLResponse(THANK_YOU_PAGE, status_code=200)


THANK_YOU_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Thank you</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto}</style>
</head><body><h1>Thank you!</h1><p>We have received your request and will be in touch soon.</p>
</body></html>
"""


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not 1 <= len(value) <= 255 or not all(" " <= ch <= "~" for ch in value):
        raise BodyError(400, "an idempotency key must be 1-255 printable ASCII characters")
    return value


def _hash(fields: Mapping[str, list[str]], trace: object) -> str:
    canonical = json.dumps(
        {"fields": {k: fields[k] for k in sorted(fields)}, "trace": trace},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _invalid_contacts(fields: Mapping[str, list[str]]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for email in non_empty(fields, "email"):
        try:
            validate_email(email, check_deliverability=False)
        except EmailNotValidError:
            errors["email"] = "not a valid email address"
            break
    for phone in non_empty(fields, "phone"):
        digits = sum(ch.isdigit() for ch in phone)
        if not 5 <= digits <= 20 or not _phone_chars_ok(phone):
            errors["phone"] = "not a valid phone number (5 to 20 digits)"
            break
    return errors


def _phone_chars_ok(phone: str) -> bool:
    return all(ch.isdigit() or ch in " +-().#/x,;ext" for ch in phone.lower())


def _origin_denied(request: Request, settings: Settings) -> Response | None:
    allowed = settings.ALLOWED_ORIGINS
    if not allowed:
        return None
    origin = request.headers.get("origin")
    if origin is None and (referer := request.headers.get("referer")):
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"
    if origin is None or origin.rstrip("/") in allowed:
        return None
    return error_response(403, "this origin may not post to this gateway")
