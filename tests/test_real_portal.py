"""Exactly once and correctly attributed on a portal that behaves as the Bitrix24 server does
(docs/bitrix24.md §0 facts 13 to 18): quotes without ORIGIN_ID, requests that finish after their
connection dropped, SQL errors and WAF pages, a renamed portal, the deal COMPANY_ID link,
back-references inside values, edit rights on a matched contact, a killed worker. Each test
counts records per unique marker: nothing lost, nothing doubled, nothing misattributed."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.store import Status, Store
from tests.conftest import Gateway, Portal, new_portal, wait_for
from tests.servers import RunningServer, free_port

MakeGateway = Callable[..., Awaitable[Gateway]]
TRACE = '{"url":"https://shop.example/","tags":{"list":{"utm_source":"google"}}}'
QUOTE_FIELD = "UF_CRM_B24FG_ORIGIN"
FORMS = """
[forms.contact]
entity = "lead"

[forms.order]
entity = "deal"

[forms.estimate]
entity = "quote"
required = ["name"]

[forms.reorder]
entity = "deal"
company = "find_or_create"
"""
FAST = {"BITRIX_RATE_PER_SECOND": 100, "BITRIX_BURST": 200}


async def gateway_for(make_gateway: MakeGateway, portal: Portal, tmp: Path, **kw: Any) -> Gateway:
    forms = tmp / "forms.toml"
    forms.write_text(FORMS)
    return await make_gateway(portal, FORMS_FILE=str(forms), **{**FAST, **kw})


async def post_all(gateway: Gateway, posts: list[tuple[str, dict[str, str]]]) -> list[str]:
    limit = asyncio.Semaphore(16)

    async def one(form: str, fields: dict[str, str]) -> str:
        async with limit, gateway.client() as client:
            response = await client.post(f"/forms/{form}", data=fields)
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    return list(await asyncio.gather(*(one(f, d) for f, d in posts)))


async def all_delivered(store: Store, ids: list[str]) -> bool:
    rows = [await store.get(i) for i in ids]
    failed = [r.id for r in rows if r is not None and r.status is Status.FAILED]
    assert not failed, f"failed: {failed[:3]} ({rows[0] and rows[0].last_error})"
    return all(r is not None and r.status is Status.DELIVERED for r in rows)


def add_record(portal: Portal, entity: str, fields: dict[str, Any]) -> int:
    """A record that exists in the portal before the gateway delivers anything."""
    response = httpx.post(portal.webhook_url + f"crm.{entity}.add", json={"fields": fields})
    response.raise_for_status()
    return int(response.json()["result"])


def per_marker(portal: Portal, entity: str, field: str = "ORIGIN_ID") -> Counter[str]:
    return Counter(str(r.get(field)) for r in portal.records(entity) if r.get(field))


def leads_and_deals(n_leads: int, n_deals: int, tag: str) -> list[tuple[str, dict[str, str]]]:
    posts: list[tuple[str, dict[str, str]]] = []
    for i in range(n_leads):
        posts.append(("contact", {"phone": f"+1555{tag}1{i:04d}", "trace": TRACE}))
    for i in range(n_deals):
        fields = {
            "name": f"Buyer {tag}{i}",
            "phone": f"+1555{tag}2{i:04d}",
            "company": f"Company {tag}{i}",
            "trace": TRACE,
        }
        posts.append(("order", fields))
    return posts


def assert_each_once(portal: Portal, ids: list[str], n_deals: int) -> None:
    for entity in ("lead", "deal", "contact", "company"):
        doubled = {k: n for k, n in per_marker(portal, entity).items() if n > 1}
        assert doubled == {}, entity
    mains = set(per_marker(portal, "lead")) | set(per_marker(portal, "deal"))
    assert mains == set(ids)
    assert len(per_marker(portal, "contact")) == len(per_marker(portal, "company")) == n_deals


async def test_quotes_under_lost_answers_are_created_once_and_never_adopt_an_older_quote(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    portal = new_portal(rate_per_second=100, burst=200, seed=5)
    try:
        older = [add_record(portal, "quote", {"TITLE": f"Old {i}"}) for i in range(8)]
        gateway = await gateway_for(
            make_gateway, portal, tmp_path, UNKNOWN_OUTCOME_WAIT_SECONDS=1, WORKER_BATCH_SIZE=4
        )
        portal.faults(lose_add_rate=0.25)
        ids = await post_all(gateway, [("estimate", {"name": f"Client {i}"}) for i in range(40)])
        store = await gateway.store()
        await wait_for(lambda: all_delivered(store, ids), within=90, interval=0.2)

        assert portal.state()["counts"].get("lost_responses", 0) >= 1  # the fault really hit
        marked = per_marker(portal, "quote", QUOTE_FIELD)
        assert marked == Counter({i: 1 for i in ids})  # one new quote per submission
        by_marker = {r[QUOTE_FIELD]: r["ID"] for r in portal.records("quote") if r.get(QUOTE_FIELD)}
        for submission_id in ids:
            row = await store.get(submission_id)
            assert row is not None
            assert row.bitrix_ids["quote"] == by_marker[submission_id]  # its own, none adopted
            assert row.bitrix_ids["quote"] not in older
        assert len(portal.records("quote")) == len(older) + len(ids)
    finally:
        portal.server.stop()


@pytest.mark.slow
async def test_requests_completing_20_s_after_their_connection_dropped_create_nothing_twice(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    portal = new_portal(rate_per_second=100, burst=200, seed=11)
    try:
        gateway = await gateway_for(
            make_gateway,
            portal,
            tmp_path,
            UNKNOWN_OUTCOME_WAIT_SECONDS=23,  # the emulator's requests end within 20 s
            WORKER_BATCH_SIZE=10,
            BITRIX_TIMEOUT_SECONDS=30,
        )
        portal.faults(late_add_rate=0.3, late_seconds=20)
        ids = await post_all(gateway, leads_and_deals(40, 20, "3"))
        store = await gateway.store()
        await wait_for(lambda: all_delivered(store, ids), within=200, interval=0.5)
        counts = portal.state()["counts"]
        assert counts.get("fault_late", 0) >= 1  # the fault really hit
        # Count only once every cut-off request has run to its end, as PHP would.
        await wait_for(lambda: _late_all_ran(portal), within=30, interval=0.5)
        assert_each_once(portal, ids, 20)
    finally:
        portal.server.stop()


def _late_all_ran(portal: Portal) -> bool:
    counts = portal.state()["counts"]
    return bool(counts.get("late_completions", 0) == counts.get("fault_late", 0))


async def test_bursts_of_sql_errors_and_waf_pages_deliver_every_submission_once(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    portal = new_portal(rate_per_second=100, burst=200, seed=13)
    try:
        gateway = await gateway_for(
            make_gateway, portal, tmp_path, UNKNOWN_OUTCOME_WAIT_SECONDS=1, WORKER_BATCH_SIZE=10
        )
        portal.faults(sql_errors=12, sql_error_commits=True)
        first = await post_all(gateway, leads_and_deals(30, 10, "4"))
        store = await gateway.store()
        await wait_for(lambda: all_delivered(store, first), within=60, interval=0.2)
        portal.faults(html_errors=8, html_status=403)
        second = await post_all(gateway, leads_and_deals(30, 10, "5"))
        await wait_for(lambda: all_delivered(store, second), within=60, interval=0.2)

        counts = portal.state()["counts"]
        assert counts.get("fault_sql", 0) >= 12 and counts.get("fault_html", 0) >= 8
        assert_each_once(portal, first + second, 20)
    finally:
        portal.server.stop()


async def test_a_renamed_portal_is_followed_to_its_new_host(
    make_gateway: MakeGateway, tmp_path: Path
) -> None:
    portal = new_portal(rate_per_second=100, burst=200)
    renamed = RunningServer(portal.server.app)
    renamed.start()
    try:
        portal.faults(moved_to=renamed.url)
        gateway = await gateway_for(make_gateway, portal, tmp_path)
        ids = await post_all(gateway, leads_and_deals(5, 2, "6"))
        store = await gateway.store()
        await wait_for(lambda: all_delivered(store, ids), within=30, interval=0.2)
        assert_each_once(portal, ids, 2)
        async with gateway.client() as client:
            metrics = (await client.get("/metrics")).text
        assert "gateway_portal_moved_total 1.0" in metrics
    finally:
        renamed.stop()
        portal.server.stop()


async def test_deal_packages_give_no_contact_outside_the_package_a_trace_link(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # Contacts 1..12 exist already; the packages' companies get ids 1..10: a COMPANY_ID sent
    # with crm.deal.add would link each deal's trace to one of these contacts.
    for i in range(12):
        add_record(portal, "contact", {"NAME": f"Other {i}"})
    before = {c["ID"]: list(c.get("TRACE_IDS", [])) for c in portal.records("contact")}
    gateway = await gateway_for(make_gateway, portal, tmp_path)
    ids = await post_all(gateway, leads_and_deals(0, 10, "7"))
    store = await gateway.store()
    await wait_for(lambda: all_delivered(store, ids), within=30, interval=0.2)

    contacts = {c["ID"]: c for c in portal.records("contact")}
    for contact_id, traces in before.items():
        assert contacts[contact_id].get("TRACE_IDS", []) == traces, contact_id
    companies = {c["ORIGIN_ID"]: c["ID"] for c in portal.records("company")}
    for deal in portal.records("deal"):
        assert int(deal["COMPANY_ID"]) == companies[f"{deal['ORIGIN_ID']}:company"]
    assert_each_once(portal, ids, 10)


async def test_back_references_in_values_reach_the_portal_as_typed(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await gateway_for(make_gateway, portal, tmp_path)
    portal.faults(outage=True)  # let them pile up, so that they would share one batch
    plain = leads_and_deals(6, 2, "8")
    tricky = [
        ("contact", {"phone": "+15559000001", "message": "my id is $result[s0_lead] ok"}),
        ("contact", {"phone": "+15559000002", "message": "$result[s1_lead]"}),
        ("contact", {"phone": "+15559000003", "message": "$error[s0_deal][error] $time[x][start]"}),
        ("order", {"name": "$result[s0_company]", "phone": "+15559000004", "company": "$next[a]"}),
    ]
    ids = await post_all(gateway, plain[:4] + tricky + plain[4:])
    portal.faults(outage=False)
    store = await gateway.store()
    await wait_for(lambda: all_delivered(store, ids), within=30, interval=0.2)

    leads = {r["ORIGIN_ID"]: r for r in portal.records("lead")}
    for submission_id, (form, fields) in zip(ids[4:8], tricky, strict=True):
        if form == "contact":
            assert leads[submission_id]["COMMENTS"] == fields["message"]
    [contact] = [r for r in portal.records("contact") if r["NAME"] == "$result[s0_company]"]
    [company] = [r for r in portal.records("company") if r["TITLE"] == "$next[a]"]
    assert (
        contact["ORIGIN_ID"] == f"{ids[7]}:contact" and company["ORIGIN_ID"] == f"{ids[7]}:company"
    )
    assert_each_once(portal, ids, 3)


async def test_look_ups_of_values_a_batch_would_rewrite_go_direct_and_still_match(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    """The company to reuse is found by its exact title even when that title holds
    back-reference syntax: the look-up goes as a direct call, not inside a batch."""
    title = "$time[j0_phone][start] Ltd"  # inside a batch: the time the phone look-up ran
    existing = add_record(portal, "company", {"TITLE": title})
    add_record(portal, "company", {"TITLE": "Other Ltd"})
    gateway = await gateway_for(make_gateway, portal, tmp_path)
    [submission_id] = await post_all(
        gateway, [("reorder", {"name": "Ann", "phone": "+15551113344", "company": title})]
    )
    store = await gateway.store()
    await wait_for(lambda: all_delivered(store, [submission_id]), within=30, interval=0.2)
    row = await store.get(submission_id)
    assert row is not None and row.bitrix_ids["company"] == existing
    assert len(portal.records("company")) == 2  # reused, not created
    [deal] = portal.records("deal")
    assert int(deal["COMPANY_ID"]) == existing
    directs = [r["method"] for r in portal.state()["requests"] if r["method"] != "batch"]
    assert "crm.company.list" in directs


async def test_a_trace_refused_for_a_matched_contact_links_the_rest_and_is_flagged(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    phone = "+15551112233"
    person = {"NAME": "Someone", "PHONE": [{"VALUE": phone, "VALUE_TYPE": "WORK"}]}
    existing = add_record(portal, "contact", person)
    portal.control("config", {"readonly_records": {"contact": [existing]}})
    gateway = await gateway_for(make_gateway, portal, tmp_path)
    [submission_id] = await post_all(
        gateway, [("order", {"name": "Ann", "phone": phone, "company": "ACME", "trace": TRACE})]
    )
    store = await gateway.store()
    await wait_for(lambda: all_delivered(store, [submission_id]), within=30, interval=0.2)

    row = await store.get(submission_id)
    assert row is not None and row.trace_problem == "links_denied:CONTACT"
    assert row.bitrix_ids["contact"] == existing
    [trace] = [
        t for t in portal.state()["traces"] if t["CREATED_BY_METHOD"] == "crm.tracking.trace.add"
    ]
    assert {e["TYPE"] for e in trace["ENTITIES"]} == {"DEAL", "COMPANY"}
    assert trace["TRACE"] == TRACE


# --------------------------------------------------------------------------- a killed worker


@pytest.mark.slow
async def test_claims_in_flight_at_a_kill_9_come_back_soon_after_the_restart(
    tmp_path: Path,
) -> None:
    from tests.test_resilience import serve, wait_up  # the killed-process helpers

    portal = new_portal(rate_per_second=0)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # Every call runs, then its answer takes 30 s: the first pass's claims stay in flight.
    # (Holding the posts back with an outage would make the breaker's probe hang instead.)
    portal.faults(hang_seconds=30)
    proc = serve(tmp_path, portal, port, "first.log", UNKNOWN_OUTCOME_WAIT_SECONDS="8")
    try:
        wait_up(url)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            ids = []
            for i in range(20):
                response = await client.post("/forms/contact", data={"phone": f"+1555700{i:04d}"})
                ids.append(response.json()["id"])
        # A batch ran in the portal and its answer is in flight: kill the worker holding it.
        await wait_for(lambda: len(portal.records("lead")) >= 1, within=15)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        portal.faults(hang_seconds=0)

        proc = serve(tmp_path, portal, port, "second.log", UNKNOWN_OUTCOME_WAIT_SECONDS="8")
        restarted = time.monotonic()
        wait_up(url)
        from app.store import create_engine

        store = Store(create_engine(f"sqlite+aiosqlite:///{tmp_path / 'killed.db'}"))
        try:
            await wait_for(lambda: all_delivered(store, ids), within=40, interval=0.2)
        finally:
            await store.engine.dispose()
        took = time.monotonic() - restarted
        assert took < 30, f"delivered {took:.0f} s after the restart"
        assert per_marker(portal, "lead") == Counter({i: 1 for i in ids})
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        portal.server.stop()
