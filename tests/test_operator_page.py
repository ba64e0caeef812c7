"""The operator's pages at /admin over real HTTP: the list (filters, pages, counts), one
submission, the retry buttons and what guards them (the token, and no cross-site posts), spam's
evidence, values shown as text. Rows are seeded into the gateway's own database; no worker runs,
so a requeued row stays requeued."""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from app.settings import Settings, SettingsError
from app.store import AttemptRecord, NewSubmission, Outcome, Status, Store
from tests.conftest import Gateway, Portal

MakeGateway = Callable[..., Awaitable[Gateway]]
TOKEN = "operator-token-for-tests-0123456789abc"
BASIC = {"Authorization": "Basic " + base64.b64encode(f"op:{TOKEN}".encode()).decode()}
HOSTILE = "<script>alert(1)</script>"
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


async def seed(
    store: Store,
    sid: str,
    *,
    at: datetime,
    form: str = "contact",
    fields: dict[str, list[str]] | None = None,
    outcome: str | None = None,
) -> None:
    """A submission received at `at`; `outcome` "failed" or "delivered" settles it at once."""
    fields = fields or {}
    name = fields.get("name", ["Ann"])[0]
    crm = {"entity": "lead", "main": "lead", "records": {"lead": {"NAME": name}}}
    new = NewSubmission(id=sid, form_id=form, entity="lead", fields=fields, crm=crm, body_hash=sid)
    await store.enqueue(new, now=at)
    if outcome is None:
        return
    claimed = await store.claim_due(now=at, limit=1, lease=timedelta(seconds=30))
    assert [s.id for s in claimed] == [sid]
    if outcome == "failed":
        attempt = AttemptRecord(1, at, at, "failed", "RejectedError", f"field {HOSTILE} required")
        done = Outcome(sid, attempt, error=f"The field {HOSTILE} is required")
    else:
        done = Outcome(sid, AttemptRecord(1, at, at, "delivered"), {"lead": 7})
    await store.record_outcomes([done], now=at)


async def operator_gateway(make_gateway: MakeGateway, portal: Portal, **overrides: Any) -> Gateway:
    return await make_gateway(portal, ADMIN_TOKEN=TOKEN, WORKER=False, **overrides)


async def test_the_pages_and_their_buttons_need_the_admin_token(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await operator_gateway(make_gateway, portal)
    store = await gateway.store()
    await seed(store, "f1", at=T0, outcome="failed")
    wrong = {"Authorization": "Basic " + base64.b64encode(b"op:not-the-token").decode()}
    async with gateway.client() as client:
        for method, path in [
            ("GET", "/admin"),
            ("GET", "/admin/s/f1"),
            ("POST", "/admin/s/f1/retry"),
            ("POST", "/admin/retry-failed"),
        ]:
            for headers in ({}, wrong):
                answer = await client.request(method, path, headers=headers)
                assert answer.status_code == 401, (method, path, headers)
                assert answer.headers["www-authenticate"].startswith("Basic")
        slash = await client.get("/admin/?status=failed", headers=BASIC)
        page = await client.get("/admin", headers={"Authorization": f"Bearer {TOKEN}"})
    assert (await store.get("f1")).status is Status.FAILED  # type: ignore[union-attr]
    assert slash.status_code == 308 and slash.headers["location"] == "/admin?status=failed"
    assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
    ],
    ids=["cross-site", "same-site-other-origin", "foreign-origin-only"],
)
async def test_a_button_pressed_on_another_sites_page_retries_nothing(
    portal: Portal, make_gateway: MakeGateway, headers: dict[str, str]
) -> None:
    gateway = await operator_gateway(make_gateway, portal)
    store = await gateway.store()
    await seed(store, "f1", at=T0, outcome="failed")
    async with gateway.client() as client:
        one = await client.post("/admin/s/f1/retry", headers={**BASIC, **headers})
        every = await client.post("/admin/retry-failed", headers={**BASIC, **headers})
    assert one.status_code == every.status_code == 403
    assert (await store.get("f1")).status is Status.FAILED  # type: ignore[union-attr]


async def test_retry_from_the_page_requeues_and_redirects_back(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await operator_gateway(make_gateway, portal)
    store = await gateway.store()
    for sid in ("f1", "f2", "f3"):
        await seed(store, sid, at=T0, outcome="failed")
    own_origin = {**BASIC, "Origin": gateway.url, "Sec-Fetch-Site": "same-origin"}
    async with gateway.client() as client:
        one = await client.post("/admin/s/f1/retry", headers=own_origin)
        again = await client.post("/admin/s/f1/retry", headers=own_origin)
        shown = await client.get(one.headers["location"], headers=BASIC)
        every = await client.post("/admin/retry-failed", headers={**BASIC, "Origin": gateway.url})
        listed = await client.get(every.headers["location"], headers=BASIC)
    assert one.status_code == 303 and one.headers["location"] == "/admin/s/f1?retry=requeued"
    assert again.headers["location"] == "/admin/s/f1?retry=not-failed"
    assert "Requeued" in shown.text and 'id="status">delivering<' in shown.text
    assert 'id="retry"' not in shown.text  # only a failed one has the button
    assert every.status_code == 303 and every.headers["location"] == "/admin?requeued=2"
    assert "Requeued 2 failed submission(s)." in listed.text
    assert {(await store.get(s)).status for s in ("f1", "f2", "f3")} == {Status.DELIVERING}  # type: ignore[union-attr]


async def test_the_list_filters_by_status_form_and_the_operators_days_and_pages(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await operator_gateway(make_gateway, portal, ADMIN_TIMEZONE="Europe/Moscow")
    store = await gateway.store()
    # 22:30 UTC on 1 November is 01:30 on 2 November in Moscow (UTC+3).
    late = datetime(2026, 11, 1, 22, 30, tzinfo=UTC)
    await seed(store, "late-failed", at=late, form="callback", outcome="failed")
    await seed(store, "early-failed", at=late - timedelta(hours=4), outcome="failed")
    for i in range(55):
        await seed(store, f"old-{i:02}", at=T0 - timedelta(days=3, minutes=i))
    async with gateway.client() as client:

        async def ids(query: str) -> list[str]:
            page = await client.get(f"/admin?{query}", headers=BASIC)
            assert page.status_code == 200, page.text
            return [part.split('"', 1)[0] for part in page.text.split('href="/admin/s/')[1:]]

        failed = await ids("status=failed")
        callback = await ids("form=callback")
        second_of_november = await ids("from=2026-11-02&to=2026-11-02")
        first_of_november = await ids("from=2026-11-01&to=2026-11-01")
        first_page = await ids("status=accepted")
        second_page = await ids("status=accepted&page=2")
        page = await client.get("/admin?status=accepted", headers=BASIC)
        counts = await client.get("/admin", headers=BASIC)
        bad_day = await client.get("/admin?from=yesterday", headers=BASIC)
        detail = await client.get("/admin/s/late-failed", headers=BASIC)
    assert failed == ["late-failed", "early-failed"]  # newest first
    assert callback == ["late-failed"]
    assert second_of_november == ["late-failed"] and first_of_november == ["early-failed"]
    assert first_page == [f"old-{i:02}" for i in range(50)]
    assert second_page == [f"old-{i:02}" for i in range(50, 55)]
    assert "page 1 of 2 (55 submissions)" in page.text
    assert 'href="/admin?status=accepted&amp;page=2" rel="next"' in page.text
    assert '<a href="/admin?status=failed" class="failed">failed 2</a>' in counts.text
    assert "accepted 55</a>" in counts.text and 'id="retry-all"' in counts.text
    assert bad_day.status_code == 422 and "from: not a date" in bad_day.text
    assert "2026-11-02 01:30:00" in detail.text and "Europe/Moscow" in detail.text


async def test_posted_values_and_errors_are_shown_as_text_not_markup(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await operator_gateway(make_gateway, portal)
    store = await gateway.store()
    fields = {"name": [HOSTILE], "phone": ["+1 555 0100"]}
    await seed(store, "f1", at=T0, fields=fields, outcome="failed")
    async with gateway.client() as client:
        page = await client.get("/admin/s/f1", headers=BASIC)
        echoed = await client.get("/admin", params={"form": HOSTILE}, headers=BASIC)
    assert page.status_code == 200
    assert "<script" not in page.text and "<script" not in echoed.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # the name, the error, excerpt
    assert page.text.count("&lt;script&gt;") >= 3
    assert "+1 555 0100" in page.text and "RejectedError" in page.text
    assert 'action="/admin/s/f1/retry"' in page.text
    assert f'value="{HOSTILE}"' not in echoed.text


async def test_spam_shows_its_evidence_and_says_why_it_cannot_be_released(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await operator_gateway(make_gateway, portal)
    store = await gateway.store()
    for sid, reason in [("s1", "too_fast"), ("s2", "captcha_low_score")]:
        spam = NewSubmission.spam(
            submission_id=sid,
            form_id="contact",
            entity="lead",
            body_hash=f"hash-{sid}",
            reason=reason,
            client_key="203.0.113.0/24",
        )
        await store.enqueue(spam, now=T0)
    async with gateway.client() as client:
        listed = await client.get("/admin?status=spam", headers=BASIC)
        shown = await client.get("/admin/s/s1", headers=BASIC)
    assert "too_fast" in listed.text and "lower min_fill_seconds" in listed.text
    assert "captcha_low_score" in listed.text and "CAPTCHA_MIN_SCORE" in listed.text
    assert "cannot be released" in listed.text and "cannot be released" in shown.text
    assert "hash-s1" in shown.text and "203.0.113.0/24" in shown.text
    assert 'id="retry"' not in shown.text


async def test_a_delivered_submission_keeps_no_error_of_an_earlier_attempt(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await operator_gateway(make_gateway, portal)
    store = await gateway.store()
    await seed(store, "d1", at=T0)
    await store.claim_due(now=T0, limit=1, lease=timedelta(seconds=30))
    retry = AttemptRecord(1, T0, T0, "retry", "Unavailable", "503 from the portal")
    await store.record_outcomes(
        [Outcome("d1", retry, next_attempt_at=T0, error="portal answered 503")], now=T0
    )
    await store.claim_due(now=T0, limit=1, lease=timedelta(seconds=30))
    await store.record_outcomes(
        [Outcome("d1", AttemptRecord(2, T0, T0, "delivered"), {"lead": 9})], now=T0
    )
    row = await store.get("d1")
    async with gateway.client() as client:
        shown = await client.get("/admin/s/d1", headers=BASIC)
    assert row is not None and (row.last_error, row.last_error_code) == (None, None)
    assert "portal answered 503" not in shown.text and "lead 9" in shown.text
    assert "503 from the portal" in shown.text  # the attempt's own record stays


async def test_the_dashboards_numbers_link_to_the_filtered_list(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await operator_gateway(make_gateway, portal)
    store = await gateway.store()
    await seed(store, "f1", at=T0, outcome="failed")
    async with gateway.client() as client:
        page = await client.get("/admin/dashboard", headers=BASIC)
    assert '<a href="/admin?status=failed">1</a>' in page.text
    assert '<a href="/admin?status=failed" id="failed-link">' in page.text


def test_an_unknown_admin_timezone_stops_the_start_in_plain_words() -> None:
    with pytest.raises(SettingsError, match="ADMIN_TIMEZONE: unknown time zone 'Mars/Base'"):
        Settings.load(_env_file=None, ADMIN_TIMEZONE="Mars/Base")
    assert Settings.load(_env_file=None).ADMIN_TIMEZONE == "UTC"


async def test_an_unknown_submission_is_a_404_page(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await operator_gateway(make_gateway, portal)
    async with httpx.AsyncClient(base_url=gateway.url, headers=BASIC) as client:
        shown = await client.get("/admin/s/nope")
        retried = await client.post("/admin/s/nope/retry")
    for answer in (shown, retried):
        assert answer.status_code == 404 and "No such submission" in answer.text
        assert 'href="/admin"' in answer.text  # a way back to the list


@pytest.fixture
def database_url(backend_database_url: str) -> str:
    """Every test on each backend: the day filters and the cleared error are SQL."""
    return backend_database_url
