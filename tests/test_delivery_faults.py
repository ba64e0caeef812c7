"""Delivery under faults: nothing accepted is lost, nothing is created twice, calls are batched."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.store import Status, Store
from tests.backlog import back_off, enqueue_leads
from tests.conftest import Gateway, Portal, new_portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]


async def post_leads(gateway: Gateway, count: int, *, prefix: str = "+1555000") -> list[str]:
    ids = []
    async with gateway.client() as client:
        for i in range(count):
            response = await client.post("/forms/contact", data={"phone": f"{prefix}{i:04d}"})
            assert response.status_code == 202
            ids.append(response.json()["id"])
    return ids


def origin_counts(portal: Portal) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in portal.records("lead"):
        counts[record["ORIGIN_ID"]] = counts.get(record["ORIGIN_ID"], 0) + 1
    return counts


async def all_delivered(store: Store, ids: list[str]) -> bool:
    for submission_id in ids:
        row = await store.get(submission_id)
        if row is None or row.status is not Status.DELIVERED:
            return False
    return True


def lead_batches(portal: Portal) -> list[dict[str, Any]]:
    return [
        r
        for r in portal.state()["requests"]
        if r["method"] == "batch" and "crm.lead.add" in r.get("commands", [])
    ]


async def test_a_form_posted_while_the_portal_is_down_is_delivered_when_it_is_back(
    make_gateway: MakeGateway,
) -> None:
    portal = new_portal()
    try:
        portal.server.stop()  # the portal's host is down: connections are refused
        gateway = await make_gateway(portal)
        ids = await post_leads(gateway, 3)
        store = await gateway.store()
        # The first attempt fails and is recorded; then the breaker probes the portal instead
        # of spending more attempts while it is down. None is lost.
        await wait_for(lambda: _attempted(store, ids[0], at_least=1))
        await asyncio.sleep(1.5)
        row = await store.get(ids[0])
        assert row is not None and row.status is Status.DELIVERING
        assert row.last_error_code == "Unreachable"
        assert len(await store.attempts_of(ids[0])) == 1

        await asyncio.to_thread(portal.server.start)  # same port: the portal is back
        await wait_for(lambda: all_delivered(store, ids))
        assert origin_counts(portal) == {i: 1 for i in ids}
    finally:
        portal.server.stop()


async def _attempted(store: Store, submission_id: str, *, at_least: int) -> bool:
    return len(await store.attempts_of(submission_id)) >= at_least


async def test_an_html_503_outage_is_waited_out_and_delivered_when_it_ends(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    portal.faults(outage=True)
    gateway = await make_gateway(portal)
    ids = await post_leads(gateway, 2)
    store = await gateway.store()
    await wait_for(lambda: _attempted(store, ids[0], at_least=1))
    # A 503 page ran nothing: no look-up is needed afterwards, and the breaker probes.
    await wait_for(lambda: any(r["method"] == "profile" for r in portal.state()["requests"]))
    assert portal.records("lead") == []
    portal.faults(outage=False)
    await wait_for(lambda: all_delivered(store, ids))
    assert origin_counts(portal) == {i: 1 for i in ids}


async def test_a_lost_answer_is_looked_up_by_origin_id_not_created_again(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    # The portal creates the lead, then the connection drops before the answer arrives.
    portal.faults(lose_responses=1)
    gateway = await make_gateway(portal)
    [submission_id] = await post_leads(gateway, 1)
    store = await gateway.store()
    await wait_for(lambda: all_delivered(store, [submission_id]))
    assert origin_counts(portal) == {submission_id: 1}
    row = await store.get(submission_id)
    assert row is not None
    assert row.bitrix_ids == {"lead": int(portal.records("lead")[0]["ID"])}
    methods = [r["method"] for r in portal.state()["requests"]]
    commands = [c for r in portal.state()["requests"] for c in r.get("commands", [])]
    assert methods.count("batch") == 2  # the add whose answer was lost, then the look-up
    assert commands == ["crm.lead.add", "crm.lead.list"]


async def test_after_a_lost_batch_one_list_command_looks_up_many_submissions(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    api_only = await make_gateway(portal, WORKER=False)
    ids = await post_leads(api_only, 40, prefix="+1555071")
    portal.faults(lose_responses=1)  # the batch of 40 runs, its answer is lost
    delivering = await make_gateway(portal)
    store = await delivering.store()
    await wait_for(lambda: all_delivered(store, ids))
    assert origin_counts(portal) == {i: 1 for i in ids}
    commands = [c for r in portal.state()["requests"] for c in r.get("commands", [])]
    assert commands.count("crm.lead.add") == 40
    assert commands.count("crm.lead.list") == 2  # 25 submissions a look-up, not one each


async def test_creates_that_need_no_look_up_ride_with_the_look_ups_of_others(
    portal: Portal, make_gateway: MakeGateway, database_url: str
) -> None:
    ids = await enqueue_leads(database_url, 11)
    # Tried once; the first one's answer was lost, so its outcome is unknown.
    codes = dict.fromkeys(ids, "Unavailable")
    await back_off(database_url, codes, until=datetime.now(UTC), unknown=frozenset(ids[:1]))
    gateway = await make_gateway(portal)
    store = await gateway.store()
    await wait_for(lambda: all_delivered(store, ids))
    assert origin_counts(portal) == {i: 1 for i in ids}
    batches = [r["commands"] for r in portal.state()["requests"] if r["method"] == "batch"]
    # The look-up for the one whose outcome was unknown, with the ten others' creates; then
    # its own create, once the look-up proved it missing.
    assert batches == [["crm.lead.list"] + ["crm.lead.add"] * 10, ["crm.lead.add"]]


async def test_batches_stay_under_batch_max_bytes(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    api_only = await make_gateway(portal, WORKER=False)
    ids = []
    async with api_only.client() as client:
        for i in range(12):
            fields = {"phone": f"+1555072{i:04d}", "message": f"{i} " + "x" * 3000}
            ids.append((await client.post("/forms/contact", data=fields)).json()["id"])
    delivering = await make_gateway(portal, BATCH_MAX_BYTES=16384)
    store = await delivering.store()
    await wait_for(lambda: all_delivered(store, ids))
    assert origin_counts(portal) == {i: 1 for i in ids}
    sizes = [len(r["commands"]) for r in lead_batches(portal)]
    # About 3 KB a command: at most five fit under 16 KiB, so one pass takes several calls.
    assert sum(sizes) == 12 and max(sizes) <= 5 and len(sizes) >= 3


async def test_a_hung_answer_times_out_and_is_looked_up_not_created_again(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    portal.faults(hang_seconds=3.0)
    # The portal is still running the call when the client gives up after 1 s: the look-up
    # waits until it cannot be running any more (4 s from sending).
    gateway = await make_gateway(portal, BITRIX_TIMEOUT_SECONDS=1, UNKNOWN_OUTCOME_WAIT_SECONDS=4)
    [submission_id] = await post_leads(gateway, 1)
    store = await gateway.store()
    await wait_for(lambda: _attempted(store, submission_id, at_least=1))
    portal.faults(hang_seconds=0)
    await wait_for(lambda: all_delivered(store, [submission_id]))
    assert origin_counts(portal) == {submission_id: 1}


async def test_ten_due_submissions_go_out_in_one_batch_call(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # An API-only replica accepts ten; then a gateway with a worker finds all ten due at once.
    api_only = await make_gateway(portal, WORKER=False)
    ids = await post_leads(api_only, 10)
    assert portal.state()["requests"] == []
    await asyncio.to_thread(api_only.server.stop)

    delivering = await make_gateway(portal)
    store = await delivering.store()
    await wait_for(lambda: all_delivered(store, ids))
    batches = lead_batches(portal)
    assert len(batches) == 1
    assert batches[0]["commands"] == ["crm.lead.add"] * 10
    assert len(portal.state()["requests"]) == 1
    assert origin_counts(portal) == {i: 1 for i in ids}


async def test_a_rejected_webhook_fails_the_submission_visibly(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    portal.control("config", {"scopes": ["user"]})  # a webhook without the crm scope
    try:
        gateway = await make_gateway(portal)
        [submission_id] = await post_leads(gateway, 1)
        store = await gateway.store()

        async def failed() -> bool:
            row = await store.get(submission_id)
            return row is not None and row.status is Status.FAILED

        await wait_for(failed)
        row = await store.get(submission_id)
        assert row is not None and row.last_error_code == "insufficient_scope"
        [attempt] = await store.attempts_of(submission_id)
        assert attempt.outcome == "failed" and attempt.error_code == "insufficient_scope"
        assert portal.records("lead") == []
        async with gateway.client() as client:
            ready = (await client.get("/readyz")).json()
        assert ready["failed"] == 1
        assert ready["portal"]["last_error"] == "insufficient_scope"
    finally:
        portal.control("config", {"scopes": ["crm", "user", "basic"]})


@pytest.fixture
def database_url(backend_database_url: str) -> str:
    """These delivery tests run on every supported database (PostgreSQL when configured)."""
    return backend_database_url
