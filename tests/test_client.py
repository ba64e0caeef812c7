"""The Bitrix24 client against the emulator over real HTTP: the execution budget it keeps in
view (docs/bitrix24.md §4.2), and a renamed portal's redirect (§1.4)."""

from __future__ import annotations

import pytest

from app.bitrix import BitrixClient, PortalMoved
from tests.conftest import Portal
from tests.servers import RunningServer


async def test_a_method_nearing_its_execution_budget_is_paused_before_the_portal_refuses_it(
    portal: Portal,
) -> None:
    portal.control("config", {"operation_limit_seconds": 1.0, "operation_cost_seconds": 0.3})
    client = BitrixClient(portal.webhook_url, rate_per_second=50, operating_budget_seconds=1.0)
    try:
        for i in range(2):
            await client.call("crm.lead.add", {"fields": {"TITLE": f"Lead {i}"}})
        assert client.blocked_until("crm.lead.add") is None  # 0.6 s of 1 s used
        batch = await client.batch({"a": "crm.lead.add?fields[TITLE]=x"}, halt=False)
        assert "a" in batch.results  # 0.9 s used: the next one would pass the margin
        until = client.blocked_until("crm.lead.add")
        assert until is not None
        assert client.blocked_until("crm.deal.add") is None  # only that method
        assert portal.state()["counts"].get("operation_time_limited", 0) == 0
    finally:
        await client.aclose()


async def test_a_redirect_to_a_host_that_is_not_a_bitrix24_portal_is_not_followed(
    portal: Portal,
) -> None:
    """The repeated POST would carry the webhook's secret path: only a Bitrix24 host (or, for
    a portal on loopback, loopback) gets it."""
    portal.faults(moved_to="https://portal.example.com")
    client = BitrixClient(portal.webhook_url)
    try:
        with pytest.raises(PortalMoved) as raised:
            await client.call("profile")
        assert "portal.example.com" in raised.value.description
        assert client.moved_to is None
        methods = [r["method"] for r in portal.state()["requests"]]
        assert methods == ["profile"]  # the redirect itself; nothing was sent elsewhere
    finally:
        await client.aclose()


async def test_a_renamed_portal_on_loopback_is_followed_and_remembered(portal: Portal) -> None:
    renamed = RunningServer(portal.server.app)
    renamed.start()
    try:
        portal.faults(moved_to=renamed.url)
        client = BitrixClient(portal.webhook_url, rate_per_second=50)
        try:
            await client.call("profile")
            await client.call("profile")
            assert client.moved_to == renamed.url.removeprefix("http://")
        finally:
            await client.aclose()
        statuses = [r["status"] for r in portal.state()["requests"]]
        assert statuses == [302, 200, 200]  # one redirect, then straight to the new host
    finally:
        renamed.stop()
