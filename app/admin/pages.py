"""`/admin` in a browser: the operator's list of submissions, one submission with its attempts,
and the retry buttons. Server-rendered HTML without script; every value is escaped.

Reads and acts only through `app.admin.service`; signs in as the dashboard does (the admin token
as a bearer token or as the Basic password). Buttons are plain POST forms, refused when the
browser says another site sent them (`same_site_post`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta, tzinfo
from typing import Annotated
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.admin import service
from app.admin.dashboard import require_browser_or_bearer
from app.admin.routes import AdminError, integer_param, status_param
from app.admin.service import AdminContext
from app.store import Status

PAGE_SIZE = 50
# Spam keeps no content (issue "safe by default"), so nothing can be released; what each
# reason means and what to change when real visitors are caught.
SPAM_ADVICE = {
    "honeypot": "the hidden honeypot field was filled in: a bot, or a browser's autofill; "
    "if people are caught, rename the form's honeypot field to something autofill skips",
    "too_fast": "the form was sent sooner than the form's min_fill_seconds after it was shown; "
    "if people are caught, lower min_fill_seconds in the forms file",
}
CAPTCHA_ADVICE = (
    "the captcha check failed; if people are caught, check CAPTCHA_PROVIDER, CAPTCHA_SECRET, "
    "CAPTCHA_MIN_SCORE and the form's captcha hosts"
)
STYLE = """body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse}td,th{padding:.25rem .6rem;border-bottom:1px solid #ddd;
text-align:left;vertical-align:top}pre{background:#f4f4f4;padding:.5rem;white-space:pre-wrap;
max-width:70rem}.failed{color:#b00020}.spam{color:#8a6d00}.note{background:#fff7d6;
padding:.5rem .8rem;max-width:60rem}nav a{margin-right:1rem}#retry-all,#retry{margin:.5rem 0}
.counts a{margin-right:1rem}"""

router = APIRouter(prefix="/admin", dependencies=[Depends(require_browser_or_bearer)])


def _context(request: Request) -> AdminContext:
    context: AdminContext = request.app.state.admin
    return context


ContextDep = Annotated[AdminContext, Depends(_context)]


def same_site_post(request: Request) -> None:
    """Refuse a button press another site made the browser send.

    The browser adds the Basic credentials by itself to any request for this origin, so a page
    elsewhere could post a retry form here. Browsers say where a post comes from: Sec-Fetch-Site
    (all current ones), else Origin; either naming another site is refused. A client that sends
    neither is no browser, and only sends credentials it was given. A per-session token would
    need sessions, which Basic auth does not have.
    """
    site = request.headers.get("sec-fetch-site")
    origin = request.headers.get("origin")
    if site is not None:
        allowed = site == "same-origin"
    elif origin is not None:
        # Host, not scheme: behind a TLS-terminating proxy the app sees http.
        allowed = urlsplit(origin).netloc.lower() == request.headers.get("host", "").lower()
    else:
        allowed = True
    if not allowed:
        raise AdminError(403, "refused: this button was pressed on another site's page")


# --------------------------------------------------------------------------- formatting


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _when(value: object, tz: tzinfo) -> str:
    """An ISO time from the service, in the operator's zone."""
    if not isinstance(value, str) or not value:
        return "—"
    return datetime.fromisoformat(value).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _href(submission_id: str) -> str:
    return "/admin/s/" + quote(submission_id, safe="")


def _tz_name(tz: tzinfo) -> str:
    return _e(getattr(tz, "key", None) or tz.tzname(None) or "UTC")


def _page(title: str, body: str, *, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{STYLE}</style></head><body>
<nav><a href="/admin">Submissions</a><a href="/admin/dashboard">Dashboard</a></nav>
{body}</body></html>""",
        status_code=status,
    )


def spam_advice(reason: object) -> str:
    text = str(reason or "")
    if text.startswith("captcha"):
        return CAPTCHA_ADVICE
    return SPAM_ADVICE.get(text, "")


NO_RELEASE = (
    "Spam is kept only as evidence (form, reason, time, client key, content hash): the posted "
    "fields are not stored, by design, so a spam submission cannot be released to delivery. "
    "If real visitors are caught, change what caught them (each reason says what) and ask "
    "them to send the form again."
)


# --------------------------------------------------------------------------- the list


def _day(name: str, value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise AdminError(422, f"{name}: not a date (YYYY-MM-DD)") from None


@router.get("/", include_in_schema=False)
async def list_slash(request: Request) -> Response:
    query = request.url.query
    return RedirectResponse("/admin" + (f"?{query}" if query else ""), status_code=308)


@router.get("", response_class=HTMLResponse, include_in_schema=False)
async def list_page(ctx: ContextDep, request: Request) -> Response:
    params = request.query_params
    status = status_param(params.get("status"))
    form_id = (params.get("form") or "").strip() or None
    day_from = _day("from", params.get("from"))
    day_to = _day("to", params.get("to"))
    number = integer_param("page", params.get("page") or "1", low=1, high=None)
    tz = ctx.timezone
    # Days are the operator's days: midnight in ADMIN_TIMEZONE; `to` includes its whole day.
    since = datetime.combine(day_from, time(), tz) if day_from else None
    until = datetime.combine(day_to + timedelta(days=1), time(), tz) if day_to else None
    listing = await service.search(
        ctx,
        status=status,
        form_id=form_id,
        since=since,
        until=until,
        limit=PAGE_SIZE,
        offset=(number - 1) * PAGE_SIZE,
    )
    counts = await ctx.store.count_by_status()
    filters = {
        "status": status.value if status else "",
        "form": form_id or "",
        "from": day_from.isoformat() if day_from else "",
        "to": day_to.isoformat() if day_to else "",
    }
    body = (
        "<h1>Submissions</h1>"
        + _notice(params)
        + _counts(counts)
        + _filter_form(filters)
        + _retry_all(counts[Status.FAILED])
        + (f'<p class="note">{_e(NO_RELEASE)}</p>' if status is Status.SPAM else "")
        + _table(listing["items"], tz, spam=status is Status.SPAM)
        + _pager(filters, number, listing["total"])
        + f"<p><small>Times in {_tz_name(tz)} (ADMIN_TIMEZONE).</small></p>"
    )
    return _page("Submissions · b24-form-gateway", body)


def _notice(params: Mapping[str, str]) -> str:
    requeued = params.get("requeued")
    if requeued is not None and requeued.isdigit():
        return f'<p class="note" id="notice">Requeued {int(requeued)} failed submission(s).</p>'
    return ""


def _counts(counts: Mapping[Status, int]) -> str:
    links = "".join(
        f'<a href="/admin?status={s.value}" class="{s.value}">{s.value} {counts[s]}</a>'
        for s in Status
    )
    return f'<p class="counts" id="counts">{links}<a href="/admin">all</a></p>'


def _filter_form(filters: Mapping[str, str]) -> str:
    options = "".join(
        f'<option value="{v}"{" selected" if filters["status"] == v else ""}>{v or "any"}</option>'
        for v in ["", *(s.value for s in Status)]
    )
    return f"""<form method="get" action="/admin" id="filter">
<label>status <select name="status">{options}</select></label>
<label>form <input name="form" value="{_e(filters["form"])}" size="14"></label>
<label>from <input type="date" name="from" value="{_e(filters["from"])}"></label>
<label>to <input type="date" name="to" value="{_e(filters["to"])}"></label>
<button type="submit">Filter</button></form>"""


def _retry_all(failed: int) -> str:
    if not failed:
        return ""
    return f"""<form method="post" action="/admin/retry-failed" id="retry-all">
<button type="submit">Retry all {failed} failed</button></form>"""


def _table(items: Sequence[Mapping[str, object]], tz: tzinfo, *, spam: bool) -> str:
    if not items:
        return "<p id='empty'>No submissions match.</p>"
    rows = []
    for item in items:
        sid = str(item["id"])
        status = str(item["status"])
        problem = item["spam_reason"] if status == Status.SPAM.value else item["last_error_code"]
        if status == Status.DELIVERED.value:
            problem = None
        rows.append(
            f'<tr class="{_e(status)}"><td><a href="{_href(sid)}">{_e(sid)}</a></td>'
            f"<td>{_e(status)}</td><td>{_e(item['form_id'])}</td>"
            f"<td>{_when(item['created_at'], tz)}</td><td>{_e(item['attempts'])}</td>"
            f"<td>{_e(problem or '')}</td>"
            + (f"<td>{_e(spam_advice(problem))}</td>" if spam else "")
            + "</tr>"
        )
    reason = "<th>reason</th><th>what it means</th>" if spam else "<th>error / reason</th>"
    return (
        '<table id="submissions"><tr><th>id</th><th>status</th><th>form</th><th>received</th>'
        f"<th>attempts</th>{reason}</tr>{''.join(rows)}</table>"
    )


def _pager(filters: Mapping[str, str], number: int, total: int) -> str:
    pages = max(1, -(-total // PAGE_SIZE))
    kept = {k: v for k, v in filters.items() if v}

    def link(to: int, label: str, rel: str) -> str:
        return f'<a href="/admin?{_e(urlencode({**kept, "page": to}))}" rel="{rel}">{label}</a>'

    parts = [f"page {number} of {pages} ({total} submissions)"]
    if number > 1:
        parts.insert(0, link(number - 1, "← newer", "prev"))
    if number < pages:
        parts.append(link(number + 1, "older →", "next"))
    return f'<p id="pager">{" ".join(parts)}</p>'


# --------------------------------------------------------------------------- one submission


@router.get("/s/{submission_id}", response_class=HTMLResponse, include_in_schema=False)
async def detail_page(ctx: ContextDep, request: Request, submission_id: str) -> Response:
    shown = await service.show(ctx, submission_id)
    if shown is None:
        return _page("Not found", "<h1>No such submission</h1>", status=404)
    tz = ctx.timezone
    status = str(shown["status"])
    facts: list[tuple[str, str]] = [
        ("id", _e(shown["id"])),
        ("status", f'<strong class="{_e(status)}" id="status">{_e(status)}</strong>'),
        ("form", _e(shown["form_id"])),
        ("entity", _e(shown["entity"])),
        ("received", _when(shown["created_at"], tz)),
        ("updated", _when(shown["updated_at"], tz)),
        ("delivered", _when(shown["delivered_at"], tz)),
        ("attempts", _e(shown["attempts"])),
        ("next attempt", _when(shown["next_attempt_at"], tz)),
        ("outcome unknown", "yes" if shown["outcome_unknown"] else "no"),
        ("trace problem", _e(shown["trace_problem"] or "—")),
        ("Bitrix ids", _ids(shown["bitrix_ids"])),
    ]
    if status != Status.DELIVERED.value and shown["last_error_code"]:
        facts.append(("last error", _e(shown["last_error_code"])))
        facts.append(("portal's answer", f"<pre>{_e(shown['last_error'])}</pre>"))
    if status == Status.SPAM.value:
        facts += [
            ("spam reason", _e(shown["spam_reason"])),
            ("what it means", _e(spam_advice(shown["spam_reason"]))),
            ("client key", _e(shown.get("client_key"))),
            ("content SHA-256", f"<code>{_e(shown.get('content_sha256'))}</code>"),
        ]
    rows = "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in facts)
    body = (
        f"<h1>Submission {_e(shown['id'])}</h1>"
        + _retry_notice(request.query_params.get("retry"))
        + _retry_button(str(shown["id"]), status)
        + (f'<p class="note" id="no-release">{_e(NO_RELEASE)}</p>' if status == "spam" else "")
        + f'<table id="facts">{rows}</table>'
        + _attempts(shown["delivery_attempts"], tz)
        + _block("Commands the next attempt would send", shown["commands"], "commands")
        + _block("Posted fields", shown["fields"], "fields")
        + _block("CRM values", shown["crm"], "crm")
        + _block("Trace", shown["trace"], "trace")
        + f"<p><small>Times in {_tz_name(tz)} (ADMIN_TIMEZONE).</small></p>"
    )
    return _page(f"Submission {shown['id']} · b24-form-gateway", body)


def _ids(value: object) -> str:
    if not isinstance(value, Mapping) or not value:
        return "—"
    return ", ".join(f"{_e(role)} {_e(number)}" for role, number in value.items())


def _retry_notice(value: str | None) -> str:
    text = {
        "requeued": "Requeued: it is due for delivery now.",
        "not-failed": "Not retried: only a failed submission (not erased) can be retried.",
    }.get(value or "")
    return f'<p class="note" id="notice">{text}</p>' if text else ""


def _retry_button(submission_id: str, status: str) -> str:
    if status != Status.FAILED.value:
        return ""
    return f"""<form method="post" action="{_href(submission_id)}/retry" id="retry">
<button type="submit">Retry</button></form>"""


def _attempts(value: object, tz: tzinfo) -> str:
    if not isinstance(value, list) or not value:
        return "<h2>Attempts</h2><p>None yet.</p>"
    rows = "".join(
        f"<tr><td>{_e(a['attempt'])}</td><td>{_when(a['started_at'], tz)}</td>"
        f"<td>{_e(a['outcome'])}</td><td>{_e(a['error_code'] or '')}</td>"
        f"<td><pre>{_e(a['excerpt'] or '')}</pre></td></tr>"
        for a in value
        if isinstance(a, Mapping)
    )
    return (
        '<h2>Attempts</h2><table id="attempts"><tr><th>#</th><th>started</th><th>outcome</th>'
        f"<th>error</th><th>portal's answer (excerpt)</th></tr>{rows}</table>"
    )


def _block(title: str, value: object, anchor: str) -> str:
    if not value:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)
    return f'<h2>{_e(title)}</h2><pre id="{anchor}">{_e(text)}</pre>'


# --------------------------------------------------------------------------- the buttons


@router.post("/s/{submission_id}/retry", include_in_schema=False)
async def retry_one(ctx: ContextDep, request: Request, submission_id: str) -> Response:
    same_site_post(request)
    outcome = await service.retry(ctx, submission_id)
    if outcome.result == "not_found":
        return _page("Not found", "<h1>No such submission</h1>", status=404)
    result = "requeued" if outcome.result == "requeued" else "not-failed"
    return RedirectResponse(f"{_href(submission_id)}?retry={result}", status_code=303)


@router.post("/retry-failed", include_in_schema=False)
async def retry_all(ctx: ContextDep, request: Request) -> Response:
    same_site_post(request)
    count = await service.retry_failed(ctx)
    return RedirectResponse(f"/admin?requeued={count}", status_code=303)
