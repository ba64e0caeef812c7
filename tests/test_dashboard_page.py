"""The operator's picture: a chart of received and delivered per hour, with the backlog."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from app.chart import activity_svg
from app.store import Status
from tests.conftest import Gateway, Portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]
TOKEN = "dash-token-123-0123456789abcdefghij"


def test_the_chart_draws_one_bar_pair_per_bucket_scaled_to_the_peak() -> None:
    start = datetime(2026, 11, 1, 8, tzinfo=UTC)
    buckets = [(start + timedelta(hours=i), r, d) for i, (r, d) in enumerate([(4, 4), (8, 2)])]
    svg = activity_svg(buckets, backlog=6, failed=1, title="<t>")
    heights = [
        float(h)
        for h in re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', svg)
    ]
    assert heights[0] == heights[1] == heights[3] * 2  # 4, 4 and 2 against a peak of 8
    assert heights[2] == max(heights)
    assert "backlog 6 · failed 1" in svg and "&lt;t&gt;" in svg and "<t>" not in svg


async def test_admin_dashboard_and_sandbox_status_show_the_run(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal, ADMIN_TOKEN=TOKEN)
    async with gateway.client() as client:
        for i in range(3):
            await client.post("/forms/contact", data={"phone": f"+1555000000{i}"})
        store = await gateway.store()

        async def delivered() -> bool:
            return (await store.count_by_status())[Status.DELIVERED] == 3

        await wait_for(delivered)
        denied = await client.get("/admin/dashboard")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith("Basic")
        basic = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
        page = await client.get("/admin/dashboard", headers={"Authorization": f"Basic {basic}"})
        bearer = await client.get("/admin/dashboard", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == bearer.status_code == 200
    assert "<svg" in page.text and "backlog 0 · failed 0" in page.text
    assert "received 3</title>" in page.text and "delivered 3</title>" in page.text
    assert "<script" not in page.text

    sandbox = await make_gateway(None)
    async with sandbox.client() as client:
        await client.post("/forms/contact", data={"phone": "+15550000001"})
        status = await client.get("/status")
    assert status.status_code == 200 and "<svg" in status.text and "(sandbox)" in status.text
    async with gateway.client() as client:
        assert (await client.get("/status")).status_code == 404  # a real portal: admin only


async def test_the_page_draws_a_seeded_history_hour_by_hour(tmp_path: object) -> None:
    from pathlib import Path

    from app.admin.dashboard import dashboard_html
    from app.store import AttemptRecord, NewSubmission, Outcome, Store, create_engine, migrate

    engine = create_engine(f"sqlite+aiosqlite:///{Path(str(tmp_path)) / 'history.db'}")
    await migrate(engine)
    store = Store(engine)
    now = datetime(2026, 11, 1, 12, 30, tzinfo=UTC)
    # 3 hours ago: 4 received, 4 delivered; 1 hour ago: 2 received, none delivered (stuck).
    history = [(now - timedelta(hours=3), 4, True), (now - timedelta(hours=1), 2, False)]
    for at, count, delivered in history:
        for i in range(count):
            sid = f"{at:%H}-{i}"
            await store.enqueue(
                NewSubmission(
                    id=sid,
                    form_id="contact",
                    entity="lead",
                    fields={},
                    crm={},
                    body_hash=sid,
                ),
                now=at,
            )
            if delivered:
                await store.claim_due(now=at, limit=1, lease=timedelta(seconds=30))
                done = at + timedelta(minutes=5)
                outcome = Outcome(sid, AttemptRecord(1, at, done, "delivered"), {"lead": i + 1})
                await store.record_outcomes([outcome], now=done)
    page = await dashboard_html(store, now=now, title="t")
    # The operator's time zone (ADMIN_TIMEZONE): the same hours, labelled in Moscow time.
    moscow = await dashboard_html(store, now=now, title="t", tz=ZoneInfo("Europe/Moscow"))
    await engine.dispose()
    assert "received 4</title>" in page and "delivered 4</title>" in page
    assert "09:00 received 4</title>" in page and "09:00 delivered 4</title>" in page
    assert "11:00 received 2</title>" in page and "11:00 delivered 0</title>" in page
    assert "backlog 2 · failed 0" in page
    assert "Updated 2026-11-01 12:30 UTC" in page
    assert "12:00 received 4</title>" in moscow and "14:00 received 2</title>" in moscow
    assert "Updated 2026-11-01 15:30 Europe/Moscow" in moscow
