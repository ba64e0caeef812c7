"""`/admin/dashboard`: a page an operator opens in a browser to see at a glance whether leads
flow: received and delivered per hour over the last hours, the backlog, failures.

Browsers cannot send a bearer token from the address bar, so this page also takes HTTP Basic
auth with the admin token as the password (any user name): the browser asks for it.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import html
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import HTMLResponse

from app.admin.routes import AdminError, authorize
from app.admin.service import AdminContext
from app.chart import activity_svg
from app.store import Status, Store

HOURS = 12
router = APIRouter()


async def dashboard_html(
    store: Store,
    *,
    now: datetime,
    title: str,
    portal: Mapping[str, object] | None = None,
    links: bool = False,
    tz: tzinfo = UTC,
) -> str:
    """The page: the chart of the last hours, the counts by status, and (from a process that
    delivers) whether the portal is reachable: the breaker's state. With `links`, the numbers
    lead to the operator's list at /admin, filtered to them. Times are shown in `tz`
    (ADMIN_TIMEZONE on the admin dashboard)."""
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    buckets = await store.activity(
        since=end - timedelta(hours=HOURS), until=end, bucket=timedelta(hours=1)
    )
    counts = await store.count_by_status()
    backlog = counts[Status.ACCEPTED] + counts[Status.DELIVERING]
    svg = activity_svg(
        [(start.astimezone(tz), received, delivered) for start, received, delivered in buckets],
        backlog=backlog,
        failed=counts[Status.FAILED],
        title=f"Submissions per hour, last {HOURS} hours",
    )
    rows = "".join(
        f"<tr><td>{s.value}</td><td>{_count(s, counts[s], links=links)}</td></tr>" for s in Status
    )
    failed = counts[Status.FAILED]
    shortcut = (
        f'<p><a href="/admin?status=failed" id="failed-link">failed {failed}</a> · '
        f'<a href="/admin?status=delivering">waiting for a retry</a> · '
        f'<a href="/admin">all submissions</a></p>'
        if links
        else ""
    )
    updated = f"{now.astimezone(tz):%Y-%m-%d %H:%M} {_zone(tz)}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta http-equiv="refresh" content="60">
<style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}
td{{padding:.2rem .8rem}}</style></head><body>
<h1>{title}</h1>{svg}
{shortcut}{_portal_line(portal, tz)}
<table><tr><th>status</th><th>submissions</th></tr>{rows}</table>
<p><small>Updated {updated}; refreshes every minute.</small></p>
</body></html>"""


def _count(status: Status, count: int, *, links: bool) -> str:
    return f'<a href="/admin?status={status.value}">{count}</a>' if links else str(count)


def _zone(tz: tzinfo) -> str:
    return html.escape(str(getattr(tz, "key", None) or tz))


def _portal_line(portal: Mapping[str, object] | None, tz: tzinfo) -> str:
    if portal is None:
        return ""
    if portal.get("state") != "open":
        return '<p id="portal">Portal: <strong>reachable</strong>.</p>'
    raw = str(portal.get("since", ""))
    try:
        moment = datetime.fromisoformat(raw).astimezone(tz)
        since = f"{moment:%Y-%m-%d %H:%M:%S} {_zone(tz)}"
    except ValueError:
        since = html.escape(raw[:19].replace("T", " ")) + " UTC"
    error = html.escape(str(portal.get("last_error") or "?"))
    return (
        '<p id="portal" style="color:#b00020">Portal: <strong>down</strong> since '
        f"{since} ({error}); deliveries wait, the worker probes it and resumes at once "
        "when it answers.</p>"
    )


def _context(request: Request) -> AdminContext:
    context: AdminContext = request.app.state.admin
    return context


def require_browser_or_bearer(
    ctx: Annotated[AdminContext, Depends(_context)],
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    expected = ctx.token.get_secret_value() if ctx.token is not None else ""
    scheme, _, value = (authorization or "").partition(" ")
    given = value.strip()
    if scheme.lower() == "basic":
        try:
            given = base64.b64decode(given, validate=True).decode("utf-8").partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            given = ""
    elif scheme.lower() != "bearer":
        given = ""
    valid = bool(expected and given and hmac.compare_digest(given.encode(), expected.encode()))
    refusal = AdminError(
        401,
        "the admin token is required (as the password, or as a bearer token)",
        headers={"WWW-Authenticate": 'Basic realm="b24-form-gateway admin", charset="UTF-8"'},
    )
    authorize(ctx, request, valid=valid, refusal=refusal)


@router.get(
    "/admin/dashboard",
    response_class=HTMLResponse,
    dependencies=[Depends(require_browser_or_bearer)],
    include_in_schema=False,
)
async def dashboard(ctx: Annotated[AdminContext, Depends(_context)]) -> HTMLResponse:
    page = await dashboard_html(
        ctx.store,
        now=datetime.now(UTC),
        title="b24-form-gateway",
        portal=ctx.portal_state(),
        links=True,
        tz=ctx.timezone,
    )
    return HTMLResponse(page)
