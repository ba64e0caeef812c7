"""The operator's picture: a chart of received and delivered per hour, with the backlog."""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from app.chart import activity_svg
from app.store import Status
from tests.conftest import Gateway, Portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]
TOKEN = "dash-token-123"


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
