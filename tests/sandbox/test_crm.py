"""Legacy crm.* methods over real HTTP: add/get/list/fields, duplicates, directories, and the Sales
Intelligence trace on add and through crm.tracking.trace.add/delete (docs/bitrix24.md §6 to §8)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.conftest import WEBHOOK, Sandbox


def crm_error(description: str) -> dict[str, str]:
    return {"error": "", "error_description": description}


def core_error(description: str) -> dict[str, str]:
    return {"error": "ERROR_CORE", "error_description": description}


# --- add -----------------------------------------------------------------------------------------


def test_add_returns_integer_ids_counted_per_entity_type(sandbox: Sandbox) -> None:
    assert sandbox.ok("crm.lead.add", {"fields": {"TITLE": "a"}}) == 1
    assert sandbox.ok("crm.lead.add", {"fields": {"TITLE": "b"}}) == 2
    assert sandbox.ok("crm.contact.add", {"fields": {"NAME": "c"}}) == 1
    assert sandbox.ok("crm.company.add", {"fields": {"TITLE": "d"}}) == 1
    assert sandbox.ok("crm.deal.add", {"fields": {"TITLE": "e"}}) == 1
    assert sandbox.ok("crm.quote.add", {"fields": {"TITLE": "f"}}) == 1


def test_add_stores_known_fields_with_multifields_and_server_fields(sandbox: Sandbox) -> None:
    fields = {
        "NAME": "Ann",
        "OPPORTUNITY": 150.5,
        "ORIGINATOR_ID": "b24-form-gateway",
        "ORIGIN_ID": "sub-42",
        "UF_CRM_CITY": "Berlin",
        "NO_SUCH_FIELD": "kept",
        "PHONE": [{"VALUE": "+49 170 1234567", "VALUE_TYPE": "MOBILE"}, {"VALUE": ""}],
        "EMAIL": [{"VALUE": "ann@example.com"}],
    }
    lead_id = sandbox.ok(
        "crm.lead.add", {"fields": fields, "params": {"REGISTER_SONET_EVENT": "Y"}}
    )
    [lead] = sandbox.records("lead")
    assert lead["ID"] == lead_id
    assert lead["TITLE"] == "Lead #1"  # filled by the server when empty (§6.2)
    assert lead["OPPORTUNITY"] == 150.5  # JSON types preserved
    assert (lead["ORIGINATOR_ID"], lead["ORIGIN_ID"]) == ("b24-form-gateway", "sub-42")
    # Unknown codes, and a custom field the portal does not have, are dropped (§6.1).
    assert "NO_SUCH_FIELD" not in lead and "UF_CRM_CITY" not in lead
    assert lead["PHONE"] == [
        {"ID": 1, "VALUE_TYPE": "MOBILE", "VALUE": "+49 170 1234567", "TYPE_ID": "PHONE"}
    ]
    assert lead["EMAIL"] == [
        {"ID": 2, "VALUE_TYPE": "WORK", "VALUE": "ann@example.com", "TYPE_ID": "EMAIL"}
    ]
    assert lead["DATE_CREATE"].endswith("+00:00")
    assert lead["STATUS_ID"] == "NEW"


def test_form_encoded_add_keeps_a_percent_encoded_plus_and_nests_multifields(
    sandbox: Sandbox,
) -> None:
    body = (
        "fields[NAME]=Order+42&fields[PHONE][0][VALUE]=%2B491701234567"
        "&fields[PHONE][0][VALUE_TYPE]=WORK&fields[PHONE][1][VALUE]=+491709999999"
    )
    response = sandbox.form("crm.contact.add.json", body)
    assert response.status_code == 200
    [contact] = sandbox.records("contact")
    assert contact["NAME"] == "Order 42"
    assert [p["VALUE"] for p in contact["PHONE"]] == ["+491701234567", " 491709999999"]


@pytest.mark.parametrize("name", ["fields", "FIELDS", "Fields"])
def test_crm_parameter_names_resolve_in_several_cases(sandbox: Sandbox, name: str) -> None:
    assert sandbox.ok("crm.deal.add", {name: {"TITLE": "x"}}) == 1


@pytest.mark.parametrize("params", [{}, {"fields": "TITLE=x"}, {"fields": 5}])
def test_add_without_a_fields_array_is_refused(sandbox: Sandbox, params: dict[str, Any]) -> None:
    response = sandbox.call("crm.lead.add", params)
    assert response.status_code == 400
    assert response.json() == crm_error("Parameter 'fields' must be array.")


def test_a_company_needs_a_title(sandbox: Sandbox) -> None:
    response = sandbox.call("crm.company.add", {"fields": {"TITLE": " "}})
    assert response.status_code == 400
    assert response.json() == crm_error('The field "Company name" is required.<br />')
    assert sandbox.records("company") == []


@pytest.mark.parametrize("entity", ["contact", "company"])
def test_an_invalid_email_fails_contact_and_company_with_error_core(
    sandbox: Sandbox, entity: str
) -> None:
    fields = {"TITLE": "Co", "NAME": "A", "EMAIL": [{"VALUE": "not-an-address"}]}
    response = sandbox.call(f"crm.{entity}.add", {"fields": fields})
    assert response.status_code == 400
    assert response.json() == core_error('The field "Work e-mail" contains an invalid address')
    assert sandbox.records(entity) == []


# --- get -----------------------------------------------------------------------------------------


def test_get_reads_back_with_legacy_string_typing(sandbox: Sandbox) -> None:
    fields = {"TITLE": "Big", "OPPORTUNITY": 15000, "CONTACT_ID": 7, "PHONE": [{"VALUE": "1"}]}
    sandbox.ok("crm.deal.add", {"fields": fields})
    deal = sandbox.ok("crm.deal.get", {"id": "1"})
    assert deal["ID"] == "1"
    assert deal["OPPORTUNITY"] == "15000.00"
    assert deal["CONTACT_ID"] == "7"
    assert deal["CATEGORY_ID"] == "0"
    assert deal["STAGE_ID"] == "NEW"
    assert deal["COMMENTS"] is None
    assert deal["CLOSEDATE"] == ""  # empty dates read as "" (§2.2)
    assert (
        "PHONE" not in deal and "TRACE" not in deal
    )  # deals have no multifields; TRACE is write-only


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"id": 99}, "Not found"),
        ({"id": 0}, "ID is not defined or invalid."),
        ({}, "ID is not defined or invalid."),
        ({"id": "x"}, "ID is not defined or invalid."),
    ],
)
def test_get_errors(sandbox: Sandbox, params: dict[str, Any], description: str) -> None:
    response = sandbox.call("crm.lead.get", params)
    assert response.status_code == 400
    assert response.json() == crm_error(description)


def test_get_accepts_a_query_string(sandbox: Sandbox) -> None:
    sandbox.ok("crm.lead.add", {"fields": {"TITLE": "q"}})
    response = sandbox.client.get(WEBHOOK + "crm.lead.get.json?id=1")
    assert response.status_code == 200
    assert response.json()["result"]["TITLE"] == "q"


# --- list ----------------------------------------------------------------------------------------


def _add_leads(sandbox: Sandbox, count: int) -> None:
    commands = {
        f"l{i}": f"crm.lead.add?fields[TITLE]=Lead%20{i}&fields[ORIGIN_ID]=sub-{i}"
        f"&fields[ORIGINATOR_ID]=gw&fields[UTM_SOURCE]={'google' if i % 2 else 'Yandex'}"
        f"&fields[PHONE][0][VALUE]=%2B4917{i:05d}"
        for i in range(1, count + 1)
    }
    items = list(commands.items())
    for offset in range(0, len(items), 50):
        outer = sandbox.ok("batch", {"halt": 1, "cmd": dict(items[offset : offset + 50])})
        assert outer["result_error"] == []


def test_list_pages_by_fifty_with_total_and_next(sandbox: Sandbox) -> None:
    _add_leads(sandbox, 120)
    pages = []
    start: Any = 0
    while start is not None:
        body = sandbox.call("crm.lead.list", {"start": start, "select": ["ID"]}).json()
        pages.append([row["ID"] for row in body["result"]])
        assert body["total"] == 120
        start = body.get("next")
    assert [len(p) for p in pages] == [50, 50, 20]
    assert pages[0][0] == "1" and pages[2][-1] == "120"


def test_start_minus_one_skips_total_and_next(sandbox: Sandbox) -> None:
    _add_leads(sandbox, 60)
    body = sandbox.call("crm.lead.list", {"start": -1, "select": ["ID"]}).json()
    assert len(body["result"]) == 50
    assert "total" not in body and "next" not in body


def test_an_origin_id_lookup_finds_exactly_its_record(sandbox: Sandbox) -> None:
    _add_leads(sandbox, 12)
    params = {
        "filter": {"=ORIGINATOR_ID": "gw", "=ORIGIN_ID": "sub-11"},
        "select": ["ID", "ORIGIN_ID", "DATE_CREATE"],
        "order": {"ID": "ASC"},
        "start": -1,
    }
    [row] = sandbox.ok("crm.lead.list", params)
    assert set(row) == {"ID", "ORIGIN_ID", "DATE_CREATE"}
    assert (row["ID"], row["ORIGIN_ID"]) == ("11", "sub-11")
    params["filter"] = {"=ORIGIN_ID": "sub-999"}
    assert sandbox.ok("crm.lead.list", params) == []


@pytest.mark.parametrize(
    ("filter_", "ids"),
    [
        ({">ID": 8}, ["9", "10"]),
        ({">=ID": "8", "<ID": 10}, ["8", "9"]),
        ({"<=ID": 2}, ["1", "2"]),
        ({"@ID": [3, "5"]}, ["3", "5"]),
        ({"!@ID": [1, 2, 3, 4, 5, 6, 7]}, ["8", "9", "10"]),
        ({"ID": 4}, ["4"]),
        ({"!ORIGIN_ID": "sub-1", "<ID": 4}, ["2", "3"]),
        ({"!=ORIGIN_ID": "sub-1", "<ID": 3}, ["2"]),
        ({"%TITLE": "ead 1"}, ["1", "10"]),
        ({"!%TITLE": "ead 1", ">ID": 7}, ["8", "9"]),
        ({"=%ORIGIN_ID": "sub-1%"}, ["1", "10"]),
        ({"UTM_SOURCE": "yandex", "<ID": 5}, ["2", "4"]),  # collation is case-insensitive
        ({"PHONE": "+491700003"}, ["3"]),  # multifields match on any value, exactly
        ({"ORIGIN_ID": ""}, []),
    ],
)
def test_list_filters_by_operator_prefix(
    sandbox: Sandbox, filter_: dict[str, Any], ids: list[str]
) -> None:
    _add_leads(sandbox, 10)
    rows = sandbox.ok("crm.lead.list", {"filter": filter_, "select": ["ID"]})
    assert [row["ID"] for row in rows] == ids


def test_list_orders_and_selects(sandbox: Sandbox) -> None:
    _add_leads(sandbox, 3)
    rows = sandbox.ok("crm.lead.list", {"order": {"ID": "DESC"}})
    assert [row["ID"] for row in rows] == ["3", "2", "1"]
    assert "PHONE" not in rows[0] and rows[0]["TITLE"] == "Lead 3"  # default: plain fields only
    assert rows[0]["ORIGIN_ID"] == "sub-3"
    [row] = sandbox.ok(
        "crm.lead.list", {"filter": {"ID": 1}, "select": ["TITLE", "PHONE", "TRACE_IDS"]}
    )
    assert row == {
        "ID": "1",
        "TITLE": "Lead 1",
        "PHONE": [{"ID": "1", "VALUE_TYPE": "WORK", "VALUE": "+491700001", "TYPE_ID": "PHONE"}],
        "TRACE_IDS": ["1"],
    }


def test_fields_describes_the_catalogue(sandbox: Sandbox) -> None:
    fields = sandbox.ok("crm.company.fields")
    assert fields["TITLE"]["isRequired"] is True
    assert fields["EMAIL"]["type"] == "crm_multifield" and fields["EMAIL"]["isMultiple"] is True
    assert fields["ORIGIN_ID"]["type"] == "string"


def test_status_list_has_the_stock_sources(sandbox: Sandbox) -> None:
    body = sandbox.call("crm.status.list", {"filter": {"ENTITY_ID": "SOURCE"}}).json()
    codes = [row["STATUS_ID"] for row in body["result"]]
    assert codes[:3] == ["CALL", "EMAIL", "WEB"] and "WEBFORM" in codes and "OTHER" in codes
    assert body["total"] == len(codes) == 12
    assert all(row["ENTITY_ID"] == "SOURCE" and row["SYSTEM"] == "Y" for row in body["result"])


def test_profile_and_scope(sandbox: Sandbox) -> None:
    assert sandbox.ok("profile")["ID"] == "1" and sandbox.ok("profile")["ADMIN"] is True
    assert sandbox.ok("scope") == ["crm", "user", "basic"]


# --- duplicates ----------------------------------------------------------------------------------


def test_findbycomm_matches_phones_by_digits_and_emails_case_insensitively(
    sandbox: Sandbox,
) -> None:
    sandbox.ok("crm.lead.add", {"fields": {"PHONE": [{"VALUE": "8 (999) 000"}]}})
    sandbox.ok(
        "crm.contact.add", {"fields": {"NAME": "A", "PHONE": [{"VALUE": "+7 999 123-45-67"}]}}
    )
    sandbox.ok(
        "crm.contact.add", {"fields": {"NAME": "B", "EMAIL": [{"VALUE": "Ann@Example.com"}]}}
    )
    sandbox.ok("crm.company.add", {"fields": {"TITLE": "C", "PHONE": [{"VALUE": "79991234567"}]}})

    phone = {"type": "PHONE", "values": ["+79991234567"]}
    assert sandbox.ok("crm.duplicate.findbycomm", phone) == {"CONTACT": [1], "COMPANY": [1]}
    contacts_only = {**phone, "entity_type": "CONTACT"}
    assert sandbox.ok("crm.duplicate.findbycomm", contacts_only) == {"CONTACT": [1]}
    email = {"TYPE": "email", "VALUES": [" ann@example.COM", 17]}
    assert sandbox.ok("crm.duplicate.findbycomm", email) == {"CONTACT": [2]}
    assert sandbox.ok("crm.duplicate.findbycomm", {"type": "PHONE", "values": ["000"]}) == []


@pytest.mark.parametrize(
    ("params", "error", "description"),
    [
        ({"values": ["1"]}, "Communication type is not defined", "Parameter 'type' is required."),
        (
            {"type": "FAX", "values": ["1"]},
            "Communication type 'FAX' is not supported in current context",
            "Communication type 'FAX' is not supported in current context.",
        ),
        (
            {"type": "PHONE"},
            "Communication values is not defined",
            "Parameter 'values' is required.",
        ),
        (
            {"type": "PHONE", "values": "+7999"},
            "Communication values is not defined",
            "Parameter 'values' is required.",
        ),
    ],
)
def test_findbycomm_errors_carry_the_sentence_as_the_code(
    sandbox: Sandbox, params: dict[str, Any], error: str, description: str
) -> None:
    response = sandbox.call("crm.duplicate.findbycomm", params)
    assert response.status_code == 400
    assert response.json() == {"error": error, "error_description": description}


# --- TRACE on add (§8.2) -------------------------------------------------------------------------


def test_every_rest_add_gets_a_trace_with_the_records_utm(sandbox: Sandbox) -> None:
    trace = '{"url":"https://shop.example/","tags":{"list":{"utm_source":"bing"}}}'
    sandbox.ok(
        "crm.lead.add", {"fields": {"TRACE": trace, "UTM_SOURCE": "google", "UTM_TERM": "x"}}
    )
    sandbox.ok("crm.lead.add", {"fields": {"TITLE": "no trace"}})
    sandbox.ok("crm.lead.add", {"fields": {"TRACE": "{broken"}})
    traces = sandbox.state()["traces"]
    assert [t["TRACE"] for t in traces] == [trace, None, "{broken"]
    assert traces[0]["DATA"]["tags"]["list"] == {"utm_source": "google", "utm_term": "x"}
    assert traces[0]["DATA"]["url"] == "https://shop.example/"
    assert traces[1]["DATA"] == {} and traces[2]["DATA"] == {}  # parse errors are swallowed
    assert [t["ENTITIES"] for t in traces] == [[{"TYPE": "LEAD", "ID": i}] for i in (1, 2, 3)]
    assert all(t["CHANNELS"] == ["rest"] for t in traces)


def test_a_numeric_trace_links_the_existing_trace(sandbox: Sandbox) -> None:
    trace_id = sandbox.ok("crm.tracking.trace.add", {"TRACE": '{"tags":{}}'})
    sandbox.ok("crm.lead.add", {"fields": {"TRACE": str(trace_id)}})
    sandbox.ok("crm.contact.add", {"fields": {"NAME": "A", "TRACE": trace_id}})
    sandbox.ok("crm.lead.add", {"fields": {"TRACE": "999"}})  # unknown id: a new (empty) trace
    state = sandbox.state()
    first = state["traces"][0]
    assert first["ENTITIES"] == [{"TYPE": "LEAD", "ID": 1}, {"TYPE": "CONTACT", "ID": 1}]
    assert len(state["traces"]) == 2 and state["traces"][1]["TRACE"] == "999"
    assert state["records"]["lead"][0]["TRACE"] == "1"  # raw value kept as sent


def test_a_deal_trace_links_its_contact_and_its_company_as_a_contact(sandbox: Sandbox) -> None:
    sandbox.ok("crm.contact.add", {"fields": {"NAME": "A"}})
    sandbox.ok("crm.contact.add", {"fields": {"NAME": "B"}})
    sandbox.ok("crm.company.add", {"fields": {"TITLE": "Co"}})
    sandbox.ok("crm.company.add", {"fields": {"TITLE": "Co2"}})
    fields = {"TITLE": "D", "CONTACT_ID": 1, "COMPANY_ID": "2", "TRACE": "{}"}
    sandbox.ok("crm.deal.add", {"fields": fields})
    deal_trace = sandbox.state()["traces"][-1]
    # The server bug of §8.2 step 3: COMPANY_ID 2 is linked as CONTACT 2.
    assert deal_trace["ENTITIES"] == [
        {"TYPE": "DEAL", "ID": 1},
        {"TYPE": "CONTACT", "ID": 1},
        {"TYPE": "CONTACT", "ID": 2},
    ]


# --- crm.tracking.trace.add / delete (§8.3) ----------------------------------------------------


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({}, "Parameter `TRACE` required."),
        ({"TRACE": ""}, "Parameter `TRACE` required."),
        ({"trace": "{}"}, "Parameter `TRACE` required."),  # exact names, unlike legacy crm.*
        ({"TRACE": "{nope"}, "Can not parse JSON in parameter `TRACE`."),
        ({"TRACE": "NaN"}, "Can not parse JSON in parameter `TRACE`."),
        (
            {"TRACE": "{}", "ENTITIES": [{"TYPE": "lead", "ID": 1}]},
            "Wrong TYPE in parameter `ENTITIES`. Allowed types: COMPANY,CONTACT,DEAL,LEAD,QUOTE",
        ),
        (
            {"TRACE": "{}", "ENTITIES": [{"ID": 1}]},
            "Wrong TYPE in parameter `ENTITIES`. Allowed types: COMPANY,CONTACT,DEAL,LEAD,QUOTE",
        ),
        (
            {"TRACE": "{}", "ENTITIES": [{"TYPE": "LEAD", "ID": "x"}]},
            "Wrong ID in parameter `ENTITIES`.",
        ),
        (
            {"TRACE": "{}", "ENTITIES": [{"TYPE": "LEAD", "ID": 0}]},
            "Wrong ID in parameter `ENTITIES`.",
        ),
        ({"TRACE": "{}", "ENTITIES": [{"TYPE": "LEAD"}]}, "Wrong ID in parameter `ENTITIES`."),
        (
            {
                "TRACE": "{}",
                "ENTITIES": [{"TYPE": "LEAD", "ID": 1}, {"TYPE": "CONTACT", "ID": "123"}],
            },
            "You have no access to entity `CONTACT` with ID `123`.",
        ),
    ],
)
def test_trace_add_validates_before_creating_anything(
    sandbox: Sandbox, params: dict[str, Any], description: str
) -> None:
    sandbox.ok("crm.lead.add", {"fields": {"TITLE": "x"}})
    before = sandbox.state()
    response = sandbox.call("crm.tracking.trace.add", params)
    assert response.status_code == 400
    assert response.json() == core_error(description)
    after = sandbox.state()
    assert after["traces"] == before["traces"]
    assert after["records"] == before["records"]


def test_trace_add_links_every_entity_additively(sandbox: Sandbox) -> None:
    sandbox.ok("crm.deal.add", {"fields": {"TITLE": "D"}})
    sandbox.ok("crm.contact.add", {"fields": {"NAME": "C"}})
    params = {
        "TRACE": '{"a":1}',
        "ENTITIES": [{"TYPE": "DEAL", "ID": 1}, {"TYPE": "CONTACT", "ID": "1"}],
    }
    first = sandbox.ok("crm.tracking.trace.add", params)
    second = sandbox.ok("crm.tracking.trace.add", params)
    assert (first, second) == (3, 4)  # after the two automatic traces of the adds
    deal = sandbox.records("deal")[0]
    assert deal["TRACE_IDS"] == [1, 3, 4]
    bare = sandbox.ok("crm.tracking.trace.add", {"TRACE": "1581"})  # a bare number passes
    assert sandbox.state()["traces"][-1] == {
        **sandbox.state()["traces"][-1],
        "ID": bare,
        "TRACE": "1581",
        "ENTITIES": [],
    }


def test_trace_add_accepts_the_form_encoded_shape(sandbox: Sandbox) -> None:
    sandbox.ok("crm.deal.add", {"fields": {"TITLE": "D"}})
    body = "TRACE=%7B%22tags%22%3A%7B%7D%7D&ENTITIES[0][TYPE]=DEAL&ENTITIES[0][ID]=1"
    response = sandbox.form("crm.tracking.trace.add", body)
    assert response.json()["result"] == 2
    assert sandbox.state()["traces"][-1]["TRACE"] == '{"tags":{}}'


def test_trace_delete_unlinks_and_needs_an_id(sandbox: Sandbox) -> None:
    sandbox.ok("crm.lead.add", {"fields": {"TITLE": "x"}})
    trace_id = sandbox.ok(
        "crm.tracking.trace.add", {"TRACE": "{}", "ENTITIES": [{"TYPE": "LEAD", "ID": 1}]}
    )
    response = sandbox.call("crm.tracking.trace.delete", {"id": trace_id})
    assert response.status_code == 200 and response.json()["result"] is None
    state = sandbox.state()
    assert [t["ID"] for t in state["traces"]] == [1]
    assert state["records"]["lead"][0]["TRACE_IDS"] == [1]
    missing = sandbox.call("crm.tracking.trace.delete", {})
    assert missing.status_code == 400
    assert missing.json() == core_error("Parameter `id` required.")
