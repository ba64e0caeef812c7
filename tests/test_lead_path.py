"""The lead path end to end: a form posted over real HTTP becomes one lead in the emulator,
with its fields, multifields, trace byte for byte, UTM from the trace and ORIGIN_ID."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.store import Status
from tests.conftest import Gateway, Portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]
FIXTURES = Path(__file__).parent / "fixtures" / "traces.jsonl"
TRACES = [json.loads(line)["trace"] for line in FIXTURES.read_text().splitlines() if line]
PAID_SEARCH = TRACES[3]  # utm_source=google, utm_medium=cpc, utm_campaign=spring

FIELDS = {
    "name": "Ann",
    "last_name": "Example",
    "phone": "+49 170 123-45-67",
    "email": "ann@example.com",
    "message": "Please call me back",
    "colour": "teal & blue",
    "trace": PAID_SEARCH,
}


def leads_with_origin(portal: Portal, origin_id: str) -> list[dict[str, Any]]:
    return [r for r in portal.records("lead") if r.get("ORIGIN_ID") == origin_id]


async def delivered_lead(portal: Portal, origin_id: str) -> dict[str, Any]:
    leads = await wait_for(lambda: leads_with_origin(portal, origin_id))
    assert len(leads) == 1, leads
    return dict(leads[0])


def multifield_values(record: dict[str, Any], name: str) -> list[str]:
    return [item["VALUE"] for item in record.get(name, [])]


async def post(
    gateway: Gateway, kind: str, fields: dict[str, str], **kwargs: Any
) -> httpx.Response:
    async with gateway.client() as client:
        if kind == "urlencoded":
            return await client.post("/forms/contact", data=fields, **kwargs)
        if kind == "multipart":
            files = {k: (None, v) for k, v in fields.items()}
            return await client.post("/forms/contact", files=files, **kwargs)
        return await client.post("/forms/contact", json=fields, **kwargs)


@pytest.mark.parametrize("kind", ["urlencoded", "multipart", "json"])
async def test_each_content_type_makes_exactly_one_lead_with_its_trace(
    portal: Portal, make_gateway: MakeGateway, kind: str
) -> None:
    gateway = await make_gateway(portal)
    response = await post(gateway, kind, FIELDS)
    assert response.status_code == 202
    body = response.json()
    assert body == {"id": body["id"], "status": "accepted"}

    lead = await delivered_lead(portal, body["id"])
    assert lead["NAME"] == "Ann"
    assert lead["LAST_NAME"] == "Example"
    assert multifield_values(lead, "PHONE") == ["+49 170 123-45-67"]  # the + survives
    assert multifield_values(lead, "EMAIL") == ["ann@example.com"]
    assert lead["COMMENTS"] == "Please call me back\n\ncolour: teal & blue"
    assert lead["TRACE"] == PAID_SEARCH  # byte for byte
    assert (lead["UTM_SOURCE"], lead["UTM_MEDIUM"], lead["UTM_CAMPAIGN"]) == (
        "google",
        "cpc",
        "spring",
    )
    assert lead["ORIGIN_ID"] == body["id"]
    assert lead["ORIGINATOR_ID"] == "b24-form-gateway"

    store = await gateway.store()
    stored = await wait_for(lambda: _delivered(store, body["id"]))
    assert stored.bitrix_ids == {"lead": int(lead["ID"])}
    assert stored.trace_problem is None


async def _delivered(store: Any, submission_id: str) -> Any:
    row = await store.get(submission_id)
    return row if row is not None and row.status is Status.DELIVERED else None


@pytest.mark.parametrize("trace", TRACES)
async def test_every_recorded_trace_arrives_unchanged(
    portal: Portal, make_gateway: MakeGateway, trace: str
) -> None:
    gateway = await make_gateway(portal)
    response = await post(gateway, "urlencoded", {"phone": "+15550001111", "trace": trace})
    lead = await delivered_lead(portal, response.json()["id"])
    assert lead["TRACE"] == trace


async def test_a_json_body_may_carry_the_trace_as_an_object(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    trace = {"url": "https://shop.example/", "tags": {"list": {"utm_source": "Yandex"}}}
    async with gateway.client() as client:
        response = await client.post("/forms/contact", json={"email": "a@b.co", "trace": trace})
    lead = await delivered_lead(portal, response.json()["id"])
    assert lead["TRACE"] == json.dumps(trace, separators=(",", ":"))
    assert lead["UTM_SOURCE"] == "Yandex"


async def test_form_utm_fields_win_over_the_trace_tags_as_a_whole_set(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    fields = {"phone": "+15550001111", "trace": PAID_SEARCH, "utm_source": "Newsletter"}
    response = await post(gateway, "urlencoded", fields)
    lead = await delivered_lead(portal, response.json()["id"])
    assert lead["UTM_SOURCE"] == "Newsletter"
    # The trace's utm_medium "cpc" belongs to another visit: not mixed into the form's set.
    assert not lead.get("UTM_MEDIUM")
    assert not lead.get("UTM_CAMPAIGN")


async def test_a_lead_reads_well_in_the_crm_title_and_source(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    fields = {"phone": "+15550001112", "name": "Ann", "last_name": "Example"}
    lead = await delivered_lead(portal, (await post(gateway, "urlencoded", fields)).json()["id"])
    assert lead["TITLE"] == "Ann Example — contact"
    assert lead["SOURCE_ID"] == "WEB"
    bare = {"phone": "+15550001113"}
    lead = await delivered_lead(portal, (await post(gateway, "urlencoded", bare)).json()["id"])
    assert lead["TITLE"] == "+15550001113 — contact"


async def test_a_form_written_for_another_form_backend_works_as_it_is(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    # A Formspree form: `_replyto`, capitalised names, `_subject`, `_next`; no `email` field.
    gateway = await make_gateway(portal)
    fields = {
        "_replyto": "ann@example.com",
        "Name": "Ann",
        "Message": "Hello",
        "_subject": "New enquiry from the pricing page",
        "_next": "https://landing.example/thanks",
        "_cc": "boss@example.com",
    }
    response = await post(gateway, "urlencoded", fields)
    assert response.status_code == 202, response.text
    lead = await delivered_lead(portal, response.json()["id"])
    assert lead["EMAIL"][0]["VALUE"] == "ann@example.com"
    assert lead["NAME"] == "Ann"
    assert lead["TITLE"] == "New enquiry from the pricing page"
    # Control fields (a leading `_`) never reach the CRM.
    assert lead["COMMENTS"] == "Hello"


async def someone_elses_trace(portal: Portal, gateway: Gateway) -> int:
    """The id of the automatic trace of a lead another visitor sent (ids are sequential)."""
    response = await post(gateway, "urlencoded", {"phone": "+15550002222", "trace": PAID_SEARCH})
    lead = await delivered_lead(portal, response.json()["id"])
    [trace_id] = lead["TRACE_IDS"]
    return int(trace_id)


def trace_entities(portal: Portal, trace_id: int) -> list[tuple[str, int]]:
    [trace] = [t for t in portal.state()["traces"] if t["ID"] == trace_id]
    return [(e["TYPE"], int(e["ID"])) for e in trace["ENTITIES"]]


@pytest.mark.parametrize("kind", ["urlencoded", "json"])
async def test_a_trace_id_is_passed_on_as_it_is_where_the_form_allows_ids(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path, kind: str
) -> None:
    forms = tmp_path / "forms.toml"
    forms.write_text("[forms.contact]\ntrace_ids = true\n")
    gateway = await make_gateway(portal, FORMS_FILE=str(forms))
    existing = await someone_elses_trace(portal, gateway)
    trace: Any = existing if kind == "json" else str(existing)
    response = await post(gateway, kind, {"phone": "+15550001111", "trace": trace})
    assert response.status_code == 202
    lead = await delivered_lead(portal, response.json()["id"])
    assert lead["TRACE"] == str(existing)
    assert lead["TRACE_IDS"] == [existing]  # linked to that trace, no new one
    store = await gateway.store()
    stored = await store.get(response.json()["id"])
    assert stored is not None and stored.trace_is_id and stored.trace_problem is None


@pytest.mark.parametrize("kind", ["urlencoded", "json"])
async def test_a_trace_id_on_a_form_without_trace_ids_is_flagged_and_not_sent(
    portal: Portal, make_gateway: MakeGateway, kind: str
) -> None:
    gateway = await make_gateway(portal)
    existing = await someone_elses_trace(portal, gateway)
    for raw in (12345, existing):
        trace: Any = raw if kind == "json" else str(raw)
        response = await post(gateway, kind, {"phone": "+15550001111", "trace": trace})
        assert response.status_code == 202
        submission_id = response.json()["id"]
        lead = await delivered_lead(portal, submission_id)
        assert "TRACE" not in lead
        # Only the add's automatic trace, made for this lead; never someone else's.
        [own] = lead["TRACE_IDS"]
        assert own not in (12345, existing)
        assert trace_entities(portal, own) == [("LEAD", int(lead["ID"]))]
        store = await gateway.store()
        stored = await store.get(submission_id)
        assert stored is not None and stored.trace_problem == "trace_id_not_allowed"
        assert stored.trace is None and not stored.trace_is_id
    assert len(trace_entities(portal, existing)) == 1  # still only the other visitor's lead


@pytest.mark.parametrize(
    ("trace", "problem"),
    [("{not json", "trace_not_json"), ("[1,2]", "trace_not_object"), ('"x"', "trace_not_object")],
)
async def test_a_bad_trace_is_accepted_flagged_and_not_sent(
    portal: Portal, make_gateway: MakeGateway, trace: str, problem: str
) -> None:
    gateway = await make_gateway(portal)
    response = await post(gateway, "urlencoded", {"phone": "+15550001111", "trace": trace})
    assert response.status_code == 202
    submission_id = response.json()["id"]
    lead = await delivered_lead(portal, submission_id)
    assert "TRACE" not in lead
    store = await gateway.store()
    stored = await store.get(submission_id)
    assert stored is not None and stored.trace_problem == problem


async def test_html_posts_get_a_thank_you_page_or_a_303(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await make_gateway(portal)
    html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    for kind in ("urlencoded", "multipart"):
        response = await post(gateway, kind, {"phone": "+15550001111"}, headers=html)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        assert "Thank you" in response.text
    # fetch() sends Accept: */* and a JSON body never gets HTML.
    response = await post(
        gateway, "urlencoded", {"phone": "+15550001111"}, headers={"Accept": "*/*"}
    )
    assert response.status_code == 202
    response = await post(gateway, "json", {"phone": "+15550001111"}, headers=html)
    assert response.status_code == 202 and response.json()["status"] == "accepted"

    forms = tmp_path / "forms.toml"
    forms.write_text('[forms.contact]\nredirect_url = "https://example.com/thanks?x=1"\n')
    other = await make_gateway(
        portal, FORMS_FILE=str(forms), DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"
    )
    async with other.client() as client:
        response = await client.post("/forms/contact", data={"phone": "+15550001111"}, headers=html)
    assert response.status_code == 303
    assert response.headers["location"] == "https://example.com/thanks?x=1"


BAD_REQUESTS: list[tuple[str, dict[str, Any], int]] = [
    ("missing contact", {"data": {"name": "Ann"}}, 422),
    ("bad email", {"data": {"email": "not-an-email"}}, 422),
    ("short phone", {"data": {"phone": "12-3"}}, 422),
    ("long phone", {"data": {"phone": "+1" + "2" * 25}}, 422),
    ("nested json", {"json": {"phone": "+15550001111", "name": {"first": "A"}}}, 422),
    (
        "broken json",
        {"content": b'{"phone": ', "headers": {"Content-Type": "application/json"}},
        400,
    ),
    ("json array", {"json": [{"phone": "+15550001111"}]}, 400),
    (
        "truncated multipart",
        {
            "content": b'--xyz\r\nContent-Disposition: form-data; name="phone"\r\n\r\n+1555',
            "headers": {"Content-Type": "multipart/form-data; boundary=xyz"},
        },
        400,
    ),
    ("no content type", {"content": b"phone=%2B15550001111", "headers": {"Content-Type": ""}}, 415),
    ("text/plain", {"content": b"phone=1", "headers": {"Content-Type": "text/plain"}}, 415),
    (
        "gzip",
        {
            "content": b"phone=%2B15550001111",
            "headers": {
                "Content-Type": "application/x-www-form-urlencoded",
                "Content-Encoding": "gzip",
            },
        },
        415,
    ),
    ("too large", {"data": {"phone": "+15550001111", "message": "x" * 70_000}}, 413),
    (
        "bad key",
        {"data": {"phone": "+15550001111"}, "headers": {"Idempotency-Key": "é".encode()}},
        400,
    ),
    ("long key field", {"data": {"phone": "+15550001111", "submission_id": "k" * 256}}, 400),
]


async def test_bad_requests_are_refused_and_store_nothing(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    async with gateway.client() as client:
        for name, kwargs, status in BAD_REQUESTS:
            response = await client.post("/forms/contact", **kwargs)
            assert response.status_code == status, (name, response.text)
            assert response.headers["content-type"] == "application/json", name
        response = await client.post("/forms/nope", data={"phone": "+15550001111"})
        assert response.status_code == 404
        response = await client.post("/forms/contact?phone=%2B15550001111", data={"name": "A"})
        assert response.status_code == 422  # fields in the query string are ignored
        assert response.json()["errors"] == {"phone|email": "one of phone, email is required"}
    store = await gateway.store()
    assert (await store.search()).total == 0
    assert portal.records("lead") == []


async def test_the_same_idempotency_key_gives_the_same_answer_and_one_lead(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    async with gateway.client() as client:
        first = await client.post(
            "/forms/contact", data={"phone": "+15550001111"}, headers={"Idempotency-Key": "k-1"}
        )
        again = await client.post(
            "/forms/contact", data={"phone": "+15550001111"}, headers={"Idempotency-Key": "k-1"}
        )
        by_field = await client.post(
            "/forms/contact", data={"phone": "+15550002222", "submission_id": "k-2"}
        )
        by_field_again = await client.post(
            "/forms/contact", json={"phone": "+15550002222", "submission_id": "k-2"}
        )
        conflict = await client.post(
            "/forms/contact", data={"phone": "+15550009999"}, headers={"Idempotency-Key": "k-1"}
        )
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert by_field.json() == by_field_again.json()
    assert conflict.status_code == 409
    await delivered_lead(portal, first.json()["id"])
    await delivered_lead(portal, by_field.json()["id"])
    assert len(portal.records("lead")) == 2


async def test_a_honeypot_hit_is_answered_as_success_stored_as_spam_never_delivered(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    async with gateway.client() as client:
        spam = await client.post("/forms/contact", data={"phone": "+15550001111", "_gotcha": "x"})
        real = await client.post("/forms/contact", data={"phone": "+15550002222", "_gotcha": ""})
    assert spam.status_code == real.status_code == 202
    await delivered_lead(portal, real.json()["id"])
    store = await gateway.store()
    stored = await store.get(spam.json()["id"])
    assert stored is not None and stored.status is Status.SPAM
    assert leads_with_origin(portal, spam.json()["id"]) == []


async def test_503_only_when_the_gateways_own_database_cannot_commit(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    from sqlalchemy import text

    gateway = await make_gateway(portal, WORKER=False)
    async with gateway.client() as client:
        ok = await client.post("/forms/contact", data={"phone": "+15550001111"})
        assert ok.status_code == 202
        store = await gateway.store()
        # The database breaks under the running gateway: its table is gone.
        async with store.engine.begin() as conn:
            await conn.execute(text("DROP TABLE delivery_attempts"))
            await conn.execute(text("DROP TABLE submissions"))
        failed = await client.post("/forms/contact", data={"phone": "+15550002222"})
        keyed = await client.post(
            "/forms/contact", data={"phone": "+15550003333"}, headers={"Idempotency-Key": "k"}
        )
        bad = await client.post("/forms/contact", data={"name": "no contact"})
        ready = await client.get("/readyz")
    for response in (failed, keyed):
        assert response.status_code == 503
        assert response.headers["retry-after"]
        assert response.json()["error"]
    assert bad.status_code == 422  # client mistakes are still answered as such
    assert ready.status_code == 503
