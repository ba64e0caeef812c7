"""Deals with their contact and company under one trace, each record created exactly once."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.store import Status, Store
from tests.conftest import Gateway, Portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]
FIXTURES = Path(__file__).parent / "fixtures" / "traces.jsonl"
PAID_SEARCH = [json.loads(line)["trace"] for line in FIXTURES.read_text().splitlines()][3]

FORMS = """
[forms.order]
entity = "deal"
title = "Order: {product}"
[forms.order.defaults]
CATEGORY_ID = 3
STAGE_ID = "C3:NEW"
ASSIGNED_BY_ID = 5
[forms.order.fields]
budget = "OPPORTUNITY"

[forms.order_always]
entity = "deal"
contact = "always_create"
company = "find_or_create"

[forms.order_new]
entity = "deal"
contact = "always_create"

[forms.bare_deal]
entity = "deal"
contact = "none"
company = "none"

[forms.subscribe]
entity = "contact"
required = ["email"]

[forms.estimate]
entity = "quote"
"""

ORDER = {
    "name": "Ann",
    "last_name": "Example",
    "phone": "+49 170 1234567",
    "email": "ann@example.com",
    "company": "ACME GmbH",
    "product": "Boiler",
    "budget": "1500",
    "message": "Installation in May",
    "trace": PAID_SEARCH,
}


@pytest.fixture
async def gateway(portal: Portal, make_gateway: MakeGateway, tmp_path: Path) -> Gateway:
    forms = tmp_path / "forms.toml"
    forms.write_text(FORMS)
    return await make_gateway(portal, FORMS_FILE=str(forms))


async def submit(gateway: Gateway, form: str, fields: dict[str, str]) -> str:
    async with gateway.client() as client:
        response = await client.post(f"/forms/{form}", data=fields)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def delivered(store: Store, submission_id: str) -> Any:
    row = await store.get(submission_id)
    return row if row is not None and row.status is Status.DELIVERED else None


def by_origin(portal: Portal, entity: str, origin_id: str) -> list[dict[str, Any]]:
    return [r for r in portal.records(entity) if r.get("ORIGIN_ID") == origin_id]


def package_traces(portal: Portal) -> list[dict[str, Any]]:
    """Traces made by crm.tracking.trace.add (not the automatic ones of each add,
    docs/bitrix24.md §8.2)."""
    return [
        t for t in portal.state()["traces"] if t["CREATED_BY_METHOD"] == "crm.tracking.trace.add"
    ]


def create_record(portal: Portal, entity: str, **fields: Any) -> int:
    """A record that exists in the portal before the gateway delivers anything."""
    response = httpx.post(portal.webhook_url + f"crm.{entity}.add", json={"fields": fields})
    response.raise_for_status()
    return int(response.json()["result"])


async def test_a_deal_package_is_created_once_with_one_trace_linking_all(
    portal: Portal, gateway: Gateway
) -> None:
    submission_id = await submit(gateway, "order", ORDER)
    store = await gateway.store()
    row = await wait_for(lambda: delivered(store, submission_id))

    [deal] = by_origin(portal, "deal", submission_id)
    [contact] = by_origin(portal, "contact", f"{submission_id}:contact")
    [company] = by_origin(portal, "company", f"{submission_id}:company")
    assert len(portal.records("deal")) == len(portal.records("contact")) == 1
    assert deal["TITLE"] == "Order: Boiler"
    assert (deal["CATEGORY_ID"], deal["STAGE_ID"], deal["OPPORTUNITY"]) == ("3", "C3:NEW", "1500")
    assert deal["COMMENTS"] == "Installation in May\n\nproduct: Boiler"
    assert int(deal["CONTACT_ID"]) == contact["ID"]
    assert int(deal["COMPANY_ID"]) == company["ID"]
    assert int(contact["COMPANY_ID"]) == company["ID"]
    assert contact["NAME"] == "Ann" and contact["LAST_NAME"] == "Example"
    assert [p["VALUE"] for p in contact["PHONE"]] == ["+49 170 1234567"]
    assert company["TITLE"] == "ACME GmbH"
    for record in (deal, contact, company):
        assert record["ORIGINATOR_ID"] == "b24-form-gateway"
        assert (record["UTM_SOURCE"], record["UTM_MEDIUM"], record["UTM_CAMPAIGN"]) == (
            "google",
            "cpc",
            "spring",
        )
        assert "TRACE" not in record  # the trace goes in the trace step, not on the adds

    [trace] = package_traces(portal)
    assert trace["TRACE"] == PAID_SEARCH  # byte for byte
    assert sorted((e["TYPE"], int(e["ID"])) for e in trace["ENTITIES"]) == sorted(
        [("DEAL", deal["ID"]), ("CONTACT", contact["ID"]), ("COMPANY", company["ID"])]
    )
    assert row.bitrix_ids == {
        "company": company["ID"],
        "contact": contact["ID"],
        "deal": deal["ID"],
        "deal_company": company["ID"],
        "trace": trace["ID"],
    }
    # A lone deal package: the look-up, then one batch.
    assert [r["method"] for r in portal.state()["requests"]] == ["batch", "batch"]


async def test_an_existing_contact_is_reused_and_linked_to_the_trace(
    portal: Portal, gateway: Gateway
) -> None:
    existing = create_record(
        portal,
        "contact",
        NAME="Ann",
        PHONE=[{"VALUE": "+49 (170) 123-45-67", "VALUE_TYPE": "MOBILE"}],
    )
    submission_id = await submit(gateway, "order", ORDER)
    store = await gateway.store()
    row = await wait_for(lambda: delivered(store, submission_id))
    assert len(portal.records("contact")) == 1  # no second contact
    [deal] = by_origin(portal, "deal", submission_id)
    assert int(deal["CONTACT_ID"]) == existing
    [trace] = package_traces(portal)
    assert ("CONTACT", existing) in [(e["TYPE"], int(e["ID"])) for e in trace["ENTITIES"]]
    assert row.bitrix_ids["contact"] == existing


async def test_always_create_makes_a_new_contact_and_find_or_create_reuses_the_company(
    portal: Portal, gateway: Gateway
) -> None:
    phone = [{"VALUE": "+491701234567", "VALUE_TYPE": "WORK"}]
    create_record(portal, "contact", NAME="Ann", PHONE=phone)
    company_id = create_record(portal, "company", TITLE="ACME GmbH")
    submission_id = await submit(gateway, "order_always", ORDER)
    store = await gateway.store()
    await wait_for(lambda: delivered(store, submission_id))
    assert len(portal.records("contact")) == 2
    assert len(portal.records("company")) == 1
    [deal] = by_origin(portal, "deal", submission_id)
    assert int(deal["COMPANY_ID"]) == company_id


async def test_a_deal_without_contact_or_company_carries_its_trace_on_the_add(
    portal: Portal, gateway: Gateway
) -> None:
    submission_id = await submit(gateway, "bare_deal", ORDER)
    store = await gateway.store()
    await wait_for(lambda: delivered(store, submission_id))
    assert portal.records("contact") == [] and portal.records("company") == []
    [deal] = by_origin(portal, "deal", submission_id)
    assert deal["TRACE"] == PAID_SEARCH
    assert len(portal.state()["requests"]) == 1


@pytest.mark.parametrize(("form", "entity"), [("subscribe", "contact"), ("estimate", "quote")])
async def test_contact_and_quote_forms_make_one_record_with_the_trace(
    portal: Portal, gateway: Gateway, form: str, entity: str
) -> None:
    submission_id = await submit(gateway, form, ORDER)
    store = await gateway.store()
    row = await wait_for(lambda: delivered(store, submission_id))
    # A quote has no ORIGIN_ID: its marker is a custom field the worker created (§6.5).
    marker = "UF_CRM_B24FG_ORIGIN" if entity == "quote" else "ORIGIN_ID"
    [record] = [r for r in portal.records(entity) if r.get(marker) == submission_id]
    assert record["TRACE"] == PAID_SEARCH
    assert record["UTM_SOURCE"] == "google"
    assert row.bitrix_ids == {entity: record["ID"]}


async def test_a_lost_answer_to_the_package_creates_nothing_twice_and_repeats_the_trace(
    portal: Portal, gateway: Gateway
) -> None:
    portal.faults(lose_responses=1)  # no look-up phase here: the first call is the package
    submission_id = await submit(gateway, "order_new", ORDER)
    store = await gateway.store()
    await wait_for(lambda: delivered(store, submission_id))
    assert len(by_origin(portal, "deal", submission_id)) == 1
    assert len(by_origin(portal, "contact", f"{submission_id}:contact")) == 1
    assert len(by_origin(portal, "company", f"{submission_id}:company")) == 1
    # The same trace linked twice is preferred to a package without its trace.
    traces = package_traces(portal)
    assert [t["TRACE"] for t in traces] == [PAID_SEARCH, PAID_SEARCH]
    commands = [c for r in portal.state()["requests"] for c in r.get("commands", [])]
    assert commands.count("crm.deal.add") == 1
    assert commands.count("crm.deal.list") == 1


@pytest.mark.parametrize(
    ("error", "status", "looked_up"),
    [("QUERY_LIMIT_EXCEEDED", 503, False), ("INTERNAL_SERVER_ERROR", 500, True)],
)
async def test_after_a_partial_failure_the_next_attempt_resumes_at_the_failed_step(
    portal: Portal, gateway: Gateway, error: str, status: int, looked_up: bool
) -> None:
    portal.faults(
        fail_methods={
            "crm.deal.add": {"count": 1, "status": status, "error": error, "description": "x"}
        }
    )
    submission_id = await submit(gateway, "order", ORDER)
    store = await gateway.store()
    row = await wait_for(lambda: delivered(store, submission_id), within=20)
    assert len(portal.records("contact")) == len(portal.records("company")) == 1
    assert len(portal.records("deal")) == 1
    attempts = await store.attempts_of(submission_id)
    assert [a.outcome for a in attempts] == ["retry", "delivered"]
    assert attempts[0].error_code == error
    commands = [c for r in portal.state()["requests"] for c in r.get("commands", [])]
    assert commands.count("crm.contact.add") == 1 and commands.count("crm.company.add") == 1
    # An add that may have run is looked up by ORIGIN_ID; one refused unrun is not.
    assert ("crm.deal.list" in commands) is looked_up
    assert set(row.bitrix_ids) == {"company", "contact", "deal", "deal_company", "trace"}


async def test_a_rejected_trace_is_retried_alone_with_a_utm_only_trace(
    portal: Portal, gateway: Gateway
) -> None:
    portal.faults(
        fail_methods={
            "crm.tracking.trace.add": {
                "count": 1,
                "status": 400,
                "error": "ERROR_CORE",
                "description": "Can not parse JSON in parameter `TRACE`.",
            }
        }
    )
    submission_id = await submit(gateway, "order", ORDER)
    store = await gateway.store()
    row = await wait_for(lambda: delivered(store, submission_id))
    assert len(portal.records("deal")) == len(portal.records("contact")) == 1
    [trace] = package_traces(portal)
    assert json.loads(trace["TRACE"]) == {
        "tags": {"list": {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring"}}
    }
    assert len(trace["ENTITIES"]) == 3
    assert row.trace_problem == "trace_rejected"
    commands = [c for r in portal.state()["requests"] for c in r.get("commands", [])]
    assert commands.count("crm.deal.add") == 1
    assert commands.count("crm.tracking.trace.add") == 2


async def test_a_trace_refused_even_with_utm_only_leaves_the_records_delivered_and_flagged(
    portal: Portal, gateway: Gateway
) -> None:
    refusal = {
        "count": 2,
        "status": 400,
        "error": "ERROR_CORE",
        "description": "Can not parse JSON in parameter `TRACE`.",
    }
    portal.faults(fail_methods={"crm.tracking.trace.add": refusal})
    submission_id = await submit(gateway, "order", ORDER)
    store = await gateway.store()
    row = await wait_for(lambda: delivered(store, submission_id))
    assert row.trace_problem == "trace_rejected+trace_refused"
    assert package_traces(portal) == []  # each record keeps its own automatic trace
    assert len(portal.records("deal")) == len(portal.records("contact")) == 1
    assert len(portal.records("company")) == 1
    commands = [c for r in portal.state()["requests"] for c in r.get("commands", [])]
    assert commands.count("crm.deal.add") == 1
    assert commands.count("crm.tracking.trace.add") == 2


def commands_of(portal: Portal, method: str) -> list[dict[str, Any]]:
    return [c for r in portal.state()["requests"] for c in r.get("commands", []) if c == method]


async def post_orders(gateway: Gateway, count: int) -> list[str]:
    ids = []
    for n in range(count):
        fields = ORDER | {
            "phone": f"+49 170 55500{n:02d}",
            "email": f"buyer{n}@example.com",
            "company": f"Buyer {n} GmbH",
        }
        ids.append(await submit(gateway, "order", fields))
    return ids


async def drain_orders(
    portal: Portal,
    make_gateway: MakeGateway,
    tmp_path: Path,
    count: int,
    *,
    before_delivery: Callable[[], None] = lambda: None,
    **settings: object,
) -> list[str]:
    """`count` orders queued by an API-only gateway, then delivered by one with `settings`."""
    forms = tmp_path / "forms.toml"
    forms.write_text(FORMS)
    api_only = await make_gateway(portal, FORMS_FILE=str(forms), WORKER=False)
    ids = await post_orders(api_only, count)
    before_delivery()
    delivering = await make_gateway(portal, FORMS_FILE=str(forms), **settings)
    store = await delivering.store()
    for submission_id in ids:
        await wait_for(lambda sid=submission_id: delivered(store, sid), within=30)
    return ids


async def test_contacts_of_many_deal_packages_are_matched_with_one_command_per_kind(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    ids = await drain_orders(portal, make_gateway, tmp_path, 12)
    # Twelve phones in one findbycomm, twelve e-mails in another: nobody was known.
    assert len(commands_of(portal, "crm.duplicate.findbycomm")) == 2
    assert len(portal.records("contact")) == 12
    for n, submission_id in enumerate(ids):
        [deal] = by_origin(portal, "deal", submission_id)
        [contact] = by_origin(portal, "contact", f"{submission_id}:contact")
        assert int(deal["CONTACT_ID"]) == int(contact["ID"])
        assert contact["EMAIL"][0]["VALUE"] == f"buyer{n}@example.com"


async def test_a_contact_found_for_one_package_of_a_group_goes_to_that_package_only(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # findbycomm answers ids, not which value found them (docs/bitrix24.md §7.2): a hit in a
    # shared question must not hand one buyer's contact to the others.
    known = {
        3: create_record(portal, "contact", PHONE=[{"VALUE": "+4917055500 03"}]),
        8: create_record(portal, "contact", EMAIL=[{"VALUE": "buyer8@example.com"}]),
    }
    ids = await drain_orders(portal, make_gateway, tmp_path, 12)
    assert len(portal.records("contact")) == 2 + 10  # the two reused, ten new
    for n, submission_id in enumerate(ids):
        [deal] = by_origin(portal, "deal", submission_id)
        if n in known:
            assert int(deal["CONTACT_ID"]) == known[n]
            assert by_origin(portal, "contact", f"{submission_id}:contact") == []
        else:
            [contact] = by_origin(portal, "contact", f"{submission_id}:contact")
            assert int(deal["CONTACT_ID"]) == int(contact["ID"])
    # The two shared questions, then each member of both groups on its own.
    assert len(commands_of(portal, "crm.duplicate.findbycomm")) == 2 + 12 + 12


def batches(portal: Portal) -> list[list[str]]:
    return [r["commands"] for r in portal.state()["requests"] if r["method"] == "batch"]


async def test_the_next_pass_looks_up_in_the_room_this_pass_leaves_in_its_creates(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # Nine packages a pass: 45 chain commands, room for the next nine's two findbycomm.
    ids = await drain_orders(portal, make_gateway, tmp_path, 27, WORKER_BATCH_SIZE=9)
    sent = batches(portal)
    assert len(sent) == 1 + 3  # one request of look-ups, then three of creates
    assert sent[0] == ["crm.duplicate.findbycomm"] * 2
    chain = ["crm.company.add", "crm.contact.add", "crm.deal.add", "crm.deal.update"]
    chain += ["crm.tracking.trace.add"]
    assert sent[1] == chain * 9 + ["crm.duplicate.findbycomm"] * 2
    assert sent[2] == chain * 9 + ["crm.duplicate.findbycomm"] * 2
    assert sent[3] == chain * 9
    for submission_id in ids:
        [deal] = by_origin(portal, "deal", submission_id)
        [contact] = by_origin(portal, "contact", f"{submission_id}:contact")
        assert int(deal["CONTACT_ID"]) == int(contact["ID"])


async def test_look_ups_asked_ahead_find_a_contact_for_their_own_pass(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    existing = create_record(portal, "contact", PHONE=[{"VALUE": "+49 170 5550012"}])
    ids = await drain_orders(portal, make_gateway, tmp_path, 18, WORKER_BATCH_SIZE=9)
    assert len(portal.records("contact")) == 1 + 17
    for n, submission_id in enumerate(ids):
        [deal] = by_origin(portal, "deal", submission_id)
        if n == 12:  # in the second pass, asked with the first pass's creates
            assert int(deal["CONTACT_ID"]) == existing
        else:
            [contact] = by_origin(portal, "contact", f"{submission_id}:contact")
            assert int(deal["CONTACT_ID"]) == int(contact["ID"])


async def test_look_ups_a_halted_chain_request_left_unasked_are_asked_in_their_own_pass(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    existing = create_record(portal, "contact", EMAIL=[{"VALUE": "buyer14@example.com"}])
    # The first pass's last create fails: halt=1 stops the batch before the next pass's
    # look-ups, which must not be read as "nobody found".
    failure = {"count": 1, "status": 400, "error": "ERROR_CORE", "description": "x"}
    ids = await drain_orders(
        portal,
        make_gateway,
        tmp_path,
        18,
        before_delivery=lambda: portal.faults(fail_methods={"crm.tracking.trace.add": failure}),
        WORKER_BATCH_SIZE=9,
    )
    for n, submission_id in enumerate(ids):
        [deal] = by_origin(portal, "deal", submission_id)
        if n == 14:
            assert int(deal["CONTACT_ID"]) == existing
        else:
            assert len(by_origin(portal, "contact", f"{submission_id}:contact")) == 1
    assert len(portal.records("contact")) == 1 + 17
    assert len(portal.records("deal")) == 18


async def test_a_lost_chain_request_that_carried_the_next_pass_look_ups_doubles_nothing(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # The first request of creates (with the next pass's look-ups at its end) is cut off on
    # arrival and still runs a second later: its packages wait, then are found by marker; the
    # next pass's look-ups count as not asked. Nothing twice, every deal with its own contact.
    existing = create_record(portal, "contact", PHONE=[{"VALUE": "+49 170 5550011"}])
    ids = await drain_orders(
        portal,
        make_gateway,
        tmp_path,
        18,
        before_delivery=lambda: portal.faults(late_requests=1, late_seconds=1.0),
        WORKER_BATCH_SIZE=9,
    )
    assert len(portal.records("deal")) == 18
    assert len(portal.records("company")) == 18
    assert len(portal.records("contact")) == 1 + 17
    for n, submission_id in enumerate(ids):
        assert len(by_origin(portal, "deal", submission_id)) == 1
        [deal] = by_origin(portal, "deal", submission_id)
        if n == 11:  # asked in the lost request, then again in its own pass
            assert int(deal["CONTACT_ID"]) == existing
        else:
            [contact] = by_origin(portal, "contact", f"{submission_id}:contact")
            assert int(deal["CONTACT_ID"]) == int(contact["ID"])
    assert len(package_traces(portal)) >= 18  # a lost trace add may be repeated (design)
    sent = batches(portal)
    chain = ["crm.company.add", "crm.contact.add", "crm.deal.add", "crm.deal.update"]
    chain += ["crm.tracking.trace.add"]
    assert sent[1] == chain * 9 + ["crm.duplicate.findbycomm"] * 2  # the request that was lost
    asked = [c for batch in sent for c in batch if c == "crm.duplicate.findbycomm"]
    assert len(asked) > 4  # the second pass asked again
