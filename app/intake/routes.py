"""`POST /forms/{form_id}`: check, validate, store (committed before answering), answer.

The edge is thin: it never builds Bitrix payloads and never calls the portal. It maps fields
through `app.forms`, checks the trace through `app.trace`, and commits through `app.store`.
In order: unknown form (404), origin (403), rate limit (429), storage budget (503), body
(400/413/415), fields (422), idempotent replay (same answer, or 409), spam (honeypot, fill
time, captcha: stored as evidence only, answered as a success), commit (202/303; 503 only when
the database cannot commit or the storage budget is spent).
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from email_validator import EmailNotValidError, validate_email
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from app.forms import (
    STANDARD_FIELDS,
    Form,
    canonical_fields,
    first,
    map_submission,
    missing_required,
    non_empty,
)
from app.intake.body import MULTIPART, URLENCODED, BodyError, media_type, parse_body
from app.intake.budget import StorageBudget
from app.intake.captcha import ALL_TOKEN_FIELDS, CaptchaVerifier, Verdict
from app.intake.clientip import UNKNOWN, ClientResolver, rate_key
from app.intake.origins import OriginPolicy, check_redirects, origin_host
from app.intake.ratelimit import RateLimit
from app.intake.spam import FILL_TIME_FIELD, spam_reason
from app.intake.visitor_pages import back_link, error_page, thank_you_page
from app.metrics import Metrics
from app.settings import Settings
from app.store import NewSubmission, Status, Store, Submission
from app.trace import check_trace

log = logging.getLogger("app.intake")

IDEMPOTENCY_HEADER = "idempotency-key"
KEY_FIELD = "submission_id"
# Fields that steer the gateway and are neither stored nor part of the idempotency hash: a
# fallback post of the same submission may carry a fresh captcha token and fill time.
TRANSIENT_FIELDS = frozenset({KEY_FIELD, FILL_TIME_FIELD, *ALL_TOKEN_FIELDS})
# Refusals an HTML post may be redirected to the form's `error_redirect_url` for: the
# visitor's input is at fault. 403/429 are answered as they are (no redirect for strangers
# and floods, and Retry-After must survive).
CONFLICT_MESSAGE = "this idempotency key was used with a different body"
ERROR_REASONS = {400: "unparsable", 409: "conflict", 413: "too_large", 422: "invalid"}


@dataclass(slots=True)
class IntakeContext:
    """What the intake needs, built by main.py; the front-door parts are built from settings.

    Raises FormsError when a form's redirect would leave its allowed origins.
    """

    settings: Settings
    forms: Mapping[str, Form]
    store: Store
    on_accepted: Callable[[], None] = lambda: None
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    metrics: Metrics | None = None
    origins: OriginPolicy = field(init=False)
    clients: ClientResolver = field(init=False)
    rate_limit: RateLimit = field(init=False)
    budget: StorageBudget = field(init=False)
    captcha: CaptchaVerifier | None = field(init=False)
    # Per form: the hosts a captcha may have been solved on (None: any).
    captcha_hosts: dict[str, frozenset[str] | None] = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.origins = OriginPolicy(settings.ALLOWED_ORIGINS, self.forms)
        check_redirects(self.forms, self.origins)
        self.captcha_hosts = {}
        for form_id in self.forms:
            origins = self.origins.allowed(form_id)
            self.captcha_hosts[form_id] = (
                None if origins is None else frozenset(origin_host(o) for o in origins)
            )
        self.clients = ClientResolver(settings.TRUSTED_PROXIES)
        metrics = self.metrics
        self.rate_limit = RateLimit(
            settings.RATE_LIMIT_PER_IP,
            max_clients=settings.RATE_LIMIT_MAX_CLIENTS,
            storage_url=settings.RATE_LIMIT_STORAGE_URL,
            on_fallback=metrics.rate_limit_fallback.inc if metrics else lambda: None,
            on_active_eviction=(
                metrics.rate_limit_active_evictions.inc if metrics else lambda: None
            ),
        )
        self.budget = StorageBudget(
            self.store,
            min_free_bytes=settings.STORAGE_MIN_FREE_MB * 1024 * 1024,
            max_per_form_hour=settings.STORAGE_MAX_SUBMISSIONS_PER_FORM_HOUR,
            form_ids=self.forms,
            clock=self.clock,
            metrics=self.metrics,
        )
        self.captcha = None
        if settings.CAPTCHA_PROVIDER is not None and settings.CAPTCHA_SECRET is not None:
            self.captcha = CaptchaVerifier(
                settings.CAPTCHA_PROVIDER,
                secret=settings.CAPTCHA_SECRET,
                verify_url=settings.CAPTCHA_VERIFY_URL,
                timeout_seconds=settings.CAPTCHA_TIMEOUT_SECONDS,
                min_score=settings.CAPTCHA_MIN_SCORE,
            )

    async def aclose(self) -> None:
        await self.rate_limit.aclose()
        if self.captcha is not None:
            await self.captcha.aclose()


router = APIRouter()


def _ctx(request: Request) -> IntakeContext:
    ctx: IntakeContext = request.app.state.intake
    return ctx


def error_response(
    status: int,
    message: str,
    errors: Mapping[str, str] | None = None,
    *,
    retry_after: int | None = None,
) -> Response:
    content: dict[str, object] = {"error": message}
    if errors:
        content["errors"] = dict(errors)
    return JSONResponse(content, status_code=status, headers=_retry_after(status, retry_after))


def _retry_after(status: int, seconds: int | None) -> dict[str, str] | None:
    """`Retry-After` when the refusal says when to come back; a 503 always does (5 s)."""
    if seconds is None and status == 503:
        seconds = 5
    return {"Retry-After": str(seconds)} if seconds is not None else None


# The request bodies, described for the OpenAPI document (clients, and the schemathesis run in
# tests/test_fuzz.py). The route reads the body itself, so FastAPI does not validate them.
_FIELD_PROPERTIES: dict[str, Any] = {
    name: {"type": "string", "maxLength": 10_000}
    for name in (
        "name",
        "last_name",
        "second_name",
        "phone",
        "email",
        "message",
        "company",
        "title",
        "utm_source",
        "utm_medium",
        "utm_campaign",
        "utm_content",
        "utm_term",
        "_gotcha",
        FILL_TIME_FIELD,
    )
}
_FIELD_PROPERTIES[KEY_FIELD] = {"type": "string", "minLength": 1, "maxLength": 255}
# What the validation below accepts, roughly (5-20 digits; a browser's email check).
_FIELD_PROPERTIES["phone"] = {"type": "string", "pattern": r"^\+?[0-9][0-9 ()-]{3,22}[0-9]$"}
_FIELD_PROPERTIES["email"] = {"type": "string", "format": "email", "maxLength": 254}
_FIELD_PROPERTIES[FILL_TIME_FIELD] = {
    "type": "string",
    "pattern": "^[0-9]{1,9}$",
    "description": "milliseconds the visitor spent on the form (set by the page's script)",
}
_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {**_FIELD_PROPERTIES, "trace": {"type": "string"}},
    "additionalProperties": {"type": "string"},
}
_JSON_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **_FIELD_PROPERTIES,
        "trace": {
            "description": "the getTrace() string, the trace as an object, or (on a form "
            "with `trace_ids = true`) the id of an existing trace",
            "anyOf": [{"type": "string"}, {"type": "object"}, {"type": "integer"}],
        },
    },
    "additionalProperties": {
        "anyOf": [
            {"type": "string"},
            {"type": "number"},
            {"type": "boolean"},
            {"type": "array", "items": {"type": "string"}},
        ]
    },
}
OPENAPI_EXTRA: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "description": "1-255 printable ASCII characters; wins over `submission_id`",
            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            URLENCODED: {"schema": _FORM_SCHEMA},
            MULTIPART: {"schema": _FORM_SCHEMA},
            "application/json": {"schema": _JSON_SCHEMA},
        },
    },
}


@router.post(
    "/forms/{form_id}",
    status_code=202,
    summary="Submit a form",
    responses={
        200: {"description": "Accepted (HTML form post, no redirect_url): a thank-you page"},
        202: {"description": "Accepted: stored durably, delivery follows"},
        303: {"description": "Accepted (HTML form post): redirect to the form's redirect_url"},
        400: {"description": "Unparsable body or invalid Idempotency-Key"},
        403: {"description": "Origin (else Referer) not allowed for this form"},
        404: {"description": "Unknown form"},
        409: {"description": "Idempotency key reused with a different body"},
        413: {"description": "Body too large"},
        415: {"description": "Unsupported Content-Type or Content-Encoding"},
        422: {"description": "Invalid fields"},
        429: {"description": "Too many submissions from this client; see Retry-After"},
        503: {"description": "The database cannot commit"},
    },
    openapi_extra=OPENAPI_EXTRA,
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
    wants_html = _wants_html(request)
    page = _Page(request, ctx, form) if wants_html else None
    if ctx.origins.denies(form.id, request.headers):
        return _refused(form, 403, "this origin may not post to this form", page=page)
    peer = request.client.host if request.client else None
    client_ip = ctx.clients.client_ip(peer, request.headers.getlist("x-forwarded-for"))
    if (wait := await ctx.rate_limit.hit(form.id, rate_key(client_ip))) is not None:
        message = "too many submissions from this client; try again later"
        return _refused(form, 429, message, retry_after=wait, page=page)
    try:
        refusal = await ctx.budget.refusal(form.id)
    except SQLAlchemyError as exc:
        log.error("intake.store_failed", extra={"form_id": form.id, "error": type(exc).__name__})
        return _refused(form, 503, "the submission could not be stored; try again", page=page)
    if refusal is not None:
        return _refused(form, 503, refusal.message, retry_after=refusal.retry_after, page=page)
    try:
        body = await parse_body(request, limit=ctx.settings.MAX_BODY_BYTES)
        # The header wins over the field when both are present (docs/design.md).
        key = _idempotency_key(request.headers.get(IDEMPOTENCY_HEADER))
        if key is None:
            key = _idempotency_key(first(body.fields, KEY_FIELD) or None)
    except BodyError as exc:
        return _refused(form, exc.status, exc.message, exc.errors, page=page)
    fields = canonical_fields(
        form, {k: v for k, v in body.fields.items() if k not in TRANSIENT_FIELDS}
    )

    errors = missing_required(form, fields) | _invalid_contacts(fields)
    if errors:
        return _refused(form, 422, "some fields are invalid", errors, page=page)

    trace = check_trace(
        body.trace, allow_ids=form.trace_ids, max_bytes=ctx.settings.MAX_TRACE_BYTES
    )
    body_hash = _hash(fields, body.trace)
    # With a captcha, a replay is answered before verifying: a token verifies only once. Without
    # one, the insert itself detects a replay (ON CONFLICT on the key), which saves a read.
    if key is not None and ctx.captcha is not None and form.captcha:
        existing = await _replay(ctx, form, key, body_hash, page=page)
        if isinstance(existing, Response):
            return existing
        if existing is not None:
            return _answer(form, existing, page)

    # Replays are answered above without a second captcha check: a token verifies only once.
    reason = spam_reason(form, body.fields)
    if reason is None:
        reason = await _captcha_reason(ctx, form, body.fields, client_ip)
    if reason is not None:
        new = NewSubmission.spam(
            submission_id=str(uuid.uuid4()),
            form_id=form.id,
            entity=form.entity.value,
            body_hash=body_hash,
            reason=reason,
            client_key=rate_key(client_ip),
            idempotency_key=key,
        )
    else:
        new = NewSubmission(
            id=str(uuid.uuid4()),
            form_id=form.id,
            entity=form.entity.value,
            fields=fields,
            crm=map_submission(form, fields, trace_utm=trace.utm),
            body_hash=body_hash,
            idempotency_key=key,
            trace=trace.value,
            trace_is_id=trace.is_id,
            trace_problem=trace.problem.value if trace.problem else None,
        )
    try:
        enqueued = await ctx.store.enqueue(new, now=ctx.clock())
    except SQLAlchemyError as exc:
        # Not log.exception: SQLAlchemy's message carries the statement's parameters, and
        # those are the visitor's name, phone and email.
        log.error("intake.store_failed", extra={"form_id": form.id, "error": type(exc).__name__})
        return error_response(503, "the submission could not be stored; try again")
    stored = enqueued.submission
    if not enqueued.created and stored.body_hash != body_hash:
        return _refused(form, 409, CONFLICT_MESSAGE, page=page)
    request.state.spam = stored.status is Status.SPAM
    if enqueued.created:
        ctx.budget.stored(form.id)
        log.info(
            "intake.accepted",
            extra={
                "submission_id": stored.id,
                "form_id": form.id,
                "status": stored.status.value,
                "spam_reason": reason,
                "trace_problem": stored.trace_problem,
            },
        )
        if stored.status is not Status.SPAM:
            ctx.on_accepted()
    return _answer(form, stored, page)


async def _captcha_reason(
    ctx: IntakeContext, form: Form, values: Mapping[str, list[str]], client_ip: str
) -> str | None:
    """The spam reason `captcha_<why>` when the form's captcha fails, else None.

    None also when the captcha is off for the form, or the provider gives no verdict.
    """
    verifier = ctx.captcha
    if verifier is None or not form.captcha:
        return None
    result = await verifier.verify(
        first(values, verifier.token_field),
        remote_ip=None if client_ip == UNKNOWN else client_ip,
        hostnames=ctx.captcha_hosts.get(form.id),
        action=form.captcha_action,
    )
    if ctx.metrics is not None:
        ctx.metrics.captcha.labels(result=result.verdict.value, reason=result.metric_reason).inc()
    if result.reason == "misconfigured":
        # Every post is spam until someone fixes CAPTCHA_SECRET: a person must act.
        log.error(
            "intake.captcha_misconfigured",
            extra={"form_id": form.id, "provider": verifier.provider},
        )
    if result.verdict is Verdict.FAILED:
        return f"captcha_{result.reason}"
    if result.verdict is Verdict.UNAVAILABLE:
        # Accepted unverified: losing real leads to a provider outage is worse than letting
        # a few bots through while the rate limit and the honeypot still stand.
        log.warning(
            "intake.captcha_unavailable",
            extra={"form_id": form.id, "provider": verifier.provider, "reason": result.reason},
        )
    return None


def _wants_html(request: Request) -> bool:
    """An HTML answer goes only to a form post whose Accept names text/html (docs/design.md)."""
    kind, _ = media_type(request)
    return kind in (URLENCODED, MULTIPART) and "text/html" in request.headers.get("accept", "")


@dataclass(frozen=True, slots=True)
class _Page:
    """An HTML form post's answer: where "back" leads (the page it came from, when that is on
    one of the form's origins)."""

    back: str | None

    def __init__(self, request: Request, ctx: IntakeContext, form: Form) -> None:
        allowed = ctx.origins.allowed(form.id)
        object.__setattr__(self, "back", back_link(request.headers.get("referer"), allowed))


def _refused(
    form: Form,
    status: int,
    message: str,
    errors: Mapping[str, str] | None = None,
    *,
    page: _Page | None,
    retry_after: int | None = None,
) -> Response:
    """A refusal: JSON; for an HTML post a 303 to the form's `error_redirect_url`, or without
    one the built-in page saying what to fix, in the form's language.

    The target is the forms file's URL (checked against the form's origins at start-up) with
    `error=<reason>` and, for invalid fields, `fields=<names>` added; never a URL from the
    request, and only names the form itself knows (`own_field_names`): a name the client made
    up would let anyone put text of their choosing into the site's own error page. The
    built-in page shows the same names only.
    """
    if page is None:
        return error_response(status, message, errors, retry_after=retry_after)
    reason = ERROR_REASONS.get(status)
    known = own_field_names(form)
    own = {name: text for name, text in (errors or {}).items() if name in known}
    if not (form.error_redirect_url and reason):
        body = error_page(
            language=form.language, overrides=form.texts, status=status, errors=own, back=page.back
        )
        return HTMLResponse(body, status_code=status, headers=_retry_after(status, retry_after))
    params = {"error": reason}
    if named := sorted(own):
        params["fields"] = ",".join(named)
    parts = urlsplit(form.error_redirect_url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    target = urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))
    return RedirectResponse(target, status_code=303)


def own_field_names(form: Form) -> frozenset[str]:
    """The field names a form declares: the standard ones, its mapped `fields`, its
    `required` groups (as written, `phone|email`) and their members. Never the honeypot."""
    names = {*STANDARD_FIELDS, *form.fields}
    for group in form.required:
        names.add(group)
        names.update(group.split("|"))
    names.discard(form.honeypot or "")
    return frozenset(names)


async def _replay(
    ctx: IntakeContext, form: Form, key: str, body_hash: str, *, page: _Page | None
) -> Submission | Response | None:
    """The submission stored under this key (a replay), a refusal (409, 503), or None."""
    try:
        existing = await ctx.store.find_by_key(form.id, key)
    except SQLAlchemyError as exc:
        log.error("intake.store_failed", extra={"form_id": form.id, "error": type(exc).__name__})
        return error_response(503, "the submission could not be stored; try again")
    if existing is None:
        return None
    if existing.body_hash != body_hash:
        return _refused(form, 409, CONFLICT_MESSAGE, page=page)
    return existing


def _answer(form: Form, submission: Submission, page: _Page | None) -> Response:
    if page is None:
        return JSONResponse({"id": submission.id, "status": "accepted"}, status_code=202)
    if form.redirect_url:
        return RedirectResponse(form.redirect_url, status_code=303)
    return HTMLResponse(thank_you_page(language=form.language, overrides=form.texts))


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
        # The contract's rule is the digit count alone (docs/design.md): people type phones with
        # spaces, dashes, brackets, "ext." or "доб."; Bitrix24 normalises them itself.
        digits = sum("0" <= ch <= "9" for ch in phone)
        if not 5 <= digits <= 20:
            errors["phone"] = "not a valid phone number (5 to 20 digits)"
            break
    return errors
