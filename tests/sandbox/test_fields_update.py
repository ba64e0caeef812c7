"""The server's field rules: quotes' own field set, unknown fields ignored on add and dropped from
list filters, custom fields made at run time, crm.*.update, and records the webhook user may not
edit (docs/bitrix24.md §0 facts 13, 14, 17, §6, §7.1, §8.3)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.sandbox.conftest import Sandbox


def crm_error(description: str) -> dict[str, str]:
    return {"error": "", "error_description": description}


def core_error(description: str) -> dict[str, str]:
    return {"error": "ERROR_CORE", "error_description": description}


# --- quotes --------------------------------------------------------------------------------------


def test_quote_fields_follow_the_docs(sandbox: Sandbox) -> None:
    fields = sandbox.ok("crm.quote.fields")
    for absent in ("ORIGINATOR_ID", "ORIGIN_ID", "PHONE", "EMAIL", "WEB", "IM"):
        assert absent not in fields
    assert fields["TITLE"]["isRequired"] is True
    assert fields["QUOTE_NUMBER"]["isReadOnly"] is True
    assert fields["STATUS_ID"]["statusType"] == "QUOTE_STATUS"
    assert fields["CONTACT_ID"]["isDeprecated"] is True
    for present in ("CONTENT", "TERMS", "CLIENT_TITLE", "CLIENT_EMAIL", "UTM_SOURCE", "UTM_TERM"):
        assert fields[present]["isReadOnly"] is False


def test_a_quote_ignores_origin_fields_and_has_its_number(sandbox: Sandbox) -> None:
    refused = sandbox.call("crm.quote.add", {"fields": {"TITLE": ""}})
    assert refused.json() == crm_error('The field "Subject" is required.<br />')
    fields = {
        "TITLE": "Offer",
        "ORIGINATOR_ID": "gw",
        "ORIGIN_ID": "sub-1",
        "PHONE": [{"VALUE": "+49 1"}],
        "QUOTE_NUMBER": "X-9",
        "CONTENT": "Body",
        "UTM_SOURCE": "google",
    }
    assert sandbox.ok("crm.quote.add", {"fields": fields}) == 1
    [quote] = sandbox.records("quote")
    assert "ORIGINATOR_ID" not in quote and "ORIGIN_ID" not in quote and "PHONE" not in quote
    assert quote["QUOTE_NUMBER"] == "1" and quote["CONTENT"] == "Body"
    # The REST add's automatic trace covers quotes, with their UTM fields (§8.2).
    [trace] = sandbox.state()["traces"]
    assert trace["ENTITIES"] == [{"TYPE": "QUOTE", "ID": 1}]
    assert trace["DATA"]["tags"]["list"] == {"utm_source": "google"}


def test_a_quote_lookup_by_origin_id_matches_every_quote(sandbox: Sandbox) -> None:
    for title in ("a", "b"):
        sandbox.ok("crm.quote.add", {"fields": {"TITLE": title, "ORIGIN_ID": title}})
    rows = sandbox.ok("crm.quote.list", {"filter": {"=ORIGIN_ID": "a"}, "select": ["ID"]})
    assert [row["ID"] for row in rows] == ["1", "2"]  # the filter key was dropped (§0 fact 14)


# --- unknown fields ------------------------------------------------------------------------------


def test_unknown_filter_keys_are_dropped_and_the_list_matches_every_row(sandbox: Sandbox) -> None:
    for i in (1, 2, 3):
        sandbox.ok("crm.lead.add", {"fields": {"TITLE": f"L{i}", "ORIGIN_ID": f"o{i}"}})
    params: dict[str, Any] = {"filter": {"=NO_SUCH": "x", "=ORIGIN_ID": "o2"}, "select": ["ID"]}
    assert sandbox.ok("crm.lead.list", params) == [{"ID": "2"}]
    for filter_ in ({"=ORIGIN": "o2"}, {"UF_CRM_MISSING": "o2"}, {"!@NOPE": [1]}):
        rows = sandbox.ok("crm.lead.list", {"filter": filter_, "select": ["ID"]})
        assert [row["ID"] for row in rows] == ["1", "2", "3"], filter_
    # A multifield is a field of the lead: it stays in the filter.
    assert sandbox.ok("crm.lead.list", {"filter": {"PHONE": "1"}, "select": ["ID"]}) == []


def test_unknown_select_entries_are_ignored(sandbox: Sandbox) -> None:
    sandbox.ok("crm.deal.add", {"fields": {"TITLE": "D", "NOPE": "x", "UF_CRM_X": "y"}})
    [row] = sandbox.ok("crm.deal.list", {"select": ["ID", "TITLE", "NOPE", "UF_CRM_X"]})
    assert row == {"ID": "1", "TITLE": "D"}
    [deal] = sandbox.records("deal")
    assert "NOPE" not in deal and "UF_CRM_X" not in deal


def test_a_like_filter_on_a_reference_field_compares_exactly(sandbox: Sandbox) -> None:
    sandbox.ok("crm.lead.add", {"fields": {"TITLE": "a", "SOURCE_ID": "WEBFORM"}})
    sandbox.ok("crm.lead.add", {"fields": {"TITLE": "b", "SOURCE_ID": "WEB"}})
    rows = sandbox.ok("crm.lead.list", {"filter": {"%SOURCE_ID": "WEB"}, "select": ["ID"]})
    assert rows == [{"ID": "2"}]  # LIKE on crm_status becomes "=" (internalizeFilterFields)


# --- custom fields at run time -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("marker", "UF_CRM_MARKER"),
        ("UF_MARKER", "UF_CRM_MARKER"),
        ("UF_CRM_MARKER", "UF_CRM_MARKER"),
        ("x" * 43, "UF_CRM_" + "X" * 43),
    ],
)
def test_userfield_add_normalises_the_name(sandbox: Sandbox, name: str, stored: str) -> None:
    field_id = sandbox.ok(
        "crm.quote.userfield.add",
        {"fields": {"FIELD_NAME": name, "USER_TYPE_ID": "string", "LABEL": "Marker"}},
    )
    assert isinstance(field_id, int)
    [row] = sandbox.ok("crm.quote.userfield.list", {"filter": {"FIELD_NAME": stored}})
    assert row["ID"] == str(field_id) and row["ENTITY_ID"] == "CRM_QUOTE"
    described = sandbox.ok("crm.quote.fields")[stored]
    assert described["isDynamic"] is True and described["formLabel"] == "Marker"


@pytest.mark.parametrize(
    ("fields", "body"),
    [
        ({"USER_TYPE_ID": "string"}, crm_error("The 'FIELD_NAME' field is not found.")),
        ({"FIELD_NAME": "X"}, crm_error("The 'USER_TYPE_ID' field is not found.")),
        (
            {"FIELD_NAME": "X" * 44, "USER_TYPE_ID": "string"},
            core_error("Field name is too long (more than 50 characters)."),
        ),
        (
            {"FIELD_NAME": "MY-FIELD", "USER_TYPE_ID": "string"},
            core_error(
                "Field name contains invalid characters. Allowed characters are: A-Z, 0-9 and _."
            ),
        ),
        (
            {"FIELD_NAME": "X", "USER_TYPE_ID": "rocket"},
            core_error("Invalid custom type specified."),
        ),
    ],
)
def test_userfield_add_errors(
    sandbox: Sandbox, fields: dict[str, Any], body: dict[str, str]
) -> None:
    response = sandbox.call("crm.lead.userfield.add", {"fields": fields})
    assert response.status_code == 400
    assert response.json() == body
    assert sandbox.ok("crm.lead.userfield.list") == []


def test_a_duplicate_custom_field_is_refused(sandbox: Sandbox) -> None:
    sandbox.control("config", {"user_fields": {"deal": ["UF_CRM_CONFIGURED"]}})
    listed = sandbox.ok("crm.deal.userfield.list")
    assert [row["FIELD_NAME"] for row in listed] == ["UF_CRM_CONFIGURED"]
    for name in ("CONFIGURED", "uf_crm_configured"):
        response = sandbox.call(
            "crm.deal.userfield.add", {"fields": {"FIELD_NAME": name, "USER_TYPE_ID": "string"}}
        )
        assert response.json() == core_error(
            "The field UF_CRM_CONFIGURED for entity CRM_DEAL already exists."
        )
    # The same name on another entity type is a different field.
    assert sandbox.ok(
        "crm.lead.userfield.add", {"fields": {"FIELD_NAME": "CONFIGURED", "USER_TYPE_ID": "string"}}
    )


def test_a_runtime_custom_field_is_stored_filtered_and_selected(sandbox: Sandbox) -> None:
    sandbox.ok("crm.quote.add", {"fields": {"TITLE": "before", "UF_CRM_SUBMISSION": "s-0"}})
    sandbox.ok(
        "crm.quote.userfield.add",
        {"fields": {"FIELD_NAME": "SUBMISSION", "USER_TYPE_ID": "string", "LABEL": "Submission"}},
    )
    for i in (1, 2):
        fields = {"TITLE": f"q{i}", "UF_CRM_SUBMISSION": f"s-{i}"}
        sandbox.ok("crm.quote.add", {"fields": fields})
    assert "UF_CRM_SUBMISSION" not in sandbox.records("quote")[0]  # unknown when it was sent
    params = {"filter": {"=UF_CRM_SUBMISSION": "s-2"}, "select": ["ID", "UF_CRM_SUBMISSION"]}
    assert sandbox.ok("crm.quote.list", params) == [{"ID": "3", "UF_CRM_SUBMISSION": "s-2"}]
    assert sandbox.ok("crm.quote.get", {"id": 2})["UF_CRM_SUBMISSION"] == "s-1"


# --- update --------------------------------------------------------------------------------------


@pytest.mark.parametrize("entity", ["lead", "deal", "contact", "company", "quote"])
def test_update_changes_known_fields_and_answers_true(sandbox: Sandbox, entity: str) -> None:
    sandbox.ok(f"crm.{entity}.add", {"fields": {"TITLE": "old", "NAME": "old"}})
    changes = {"COMMENTS": "new", "NO_SUCH_FIELD": "x", "ID": 99, "DATE_CREATE": "2000-01-01"}
    response = sandbox.call(f"crm.{entity}.update", {"id": 1, "fields": changes})
    assert response.status_code == 200 and response.json()["result"] is True
    [record] = sandbox.records(entity)
    assert record["COMMENTS"] == "new" and record["ID"] == 1
    assert "NO_SUCH_FIELD" not in record and record["DATE_CREATE"] != "2000-01-01"


@pytest.mark.parametrize(
    ("entity", "description"),
    [
        ("deal", "Not found"),
        ("lead", "Lead is not found"),
        ("contact", "Contact is not found"),
        ("company", "Company is not found"),
        ("quote", "Quote is not found"),
    ],
)
def test_update_of_a_missing_record(sandbox: Sandbox, entity: str, description: str) -> None:
    response = sandbox.call(f"crm.{entity}.update", {"id": 5, "fields": {"COMMENTS": "x"}})
    assert response.status_code == 400
    assert response.json() == crm_error(description)


@pytest.mark.parametrize(
    ("params", "description"),
    [
        ({"fields": {}}, "ID is not defined or invalid."),
        ({"id": 0, "fields": {}}, "ID is not defined or invalid."),
        ({"id": 1}, "Parameter 'fields' must be array."),
    ],
)
def test_update_parameter_errors(
    sandbox: Sandbox, params: dict[str, Any], description: str
) -> None:
    sandbox.ok("crm.deal.add", {"fields": {"TITLE": "D"}})
    assert sandbox.call("crm.deal.update", params).json() == crm_error(description)


def test_update_edits_multifields_by_id(sandbox: Sandbox) -> None:
    phones = [{"VALUE": "+1"}, {"VALUE": "+2"}]
    sandbox.ok("crm.contact.add", {"fields": {"NAME": "A", "PHONE": phones}})
    changes = [{"ID": 1, "VALUE": "+11"}, {"ID": 2, "DELETE": "Y"}, {"VALUE": "+3"}]
    sandbox.ok("crm.contact.update", {"id": 1, "fields": {"PHONE": changes}})
    [contact] = sandbox.records("contact")
    assert [(p["ID"], p["VALUE"]) for p in contact["PHONE"]] == [(1, "+11"), (3, "+3")]


def test_update_makes_no_trace_links_except_a_numeric_trace(sandbox: Sandbox) -> None:
    sandbox.ok("crm.contact.add", {"fields": {"NAME": "unrelated"}})
    sandbox.ok("crm.company.add", {"fields": {"TITLE": "Co"}})
    sandbox.ok("crm.deal.add", {"fields": {"TITLE": "D"}})
    before = sandbox.state()["traces"]
    changes = {"COMPANY_ID": 1, "CONTACT_ID": 1, "UTM_SOURCE": "google", "TRACE": "{}"}
    sandbox.ok("crm.deal.update", {"id": 1, "fields": changes})
    assert sandbox.state()["traces"] == before  # no CONTACT #<COMPANY_ID> link (§0 fact 17)
    sandbox.ok("crm.deal.update", {"id": 1, "fields": {"TRACE": "1"}})
    first = sandbox.state()["traces"][0]
    assert first["ENTITIES"] == [{"TYPE": "CONTACT", "ID": 1}, {"TYPE": "DEAL", "ID": 1}]


# --- records the webhook user may not edit -------------------------------------------------------


def test_readonly_records_refuse_update_and_trace_links(sandbox: Sandbox) -> None:
    answer = sandbox.control("config", {"readonly_records": {"contact": [2]}})
    assert answer.status_code == 200 and answer.json()["readonly_records"] == {"contact": [2]}
    sandbox.ok("crm.contact.add", {"fields": {"NAME": "mine"}})
    sandbox.ok("crm.contact.add", {"fields": {"NAME": "theirs"}})
    assert sandbox.ok("crm.contact.get", {"id": 2})["NAME"] == "theirs"  # readable
    response = sandbox.call("crm.contact.update", {"id": 2, "fields": {"NAME": "x"}})
    assert response.status_code == 400 and response.json() == crm_error("Access denied.")
    assert sandbox.records("contact")[1]["NAME"] == "theirs"
    before = sandbox.state()["traces"]
    entities = [{"TYPE": "CONTACT", "ID": 1}, {"TYPE": "CONTACT", "ID": 2}]
    response = sandbox.call("crm.tracking.trace.add", {"TRACE": "{}", "ENTITIES": entities})
    assert response.status_code == 400
    assert response.json() == core_error("You have no access to entity `CONTACT` with ID `2`.")
    assert sandbox.state()["traces"] == before  # nothing created
    assert sandbox.ok("crm.contact.update", {"id": 1, "fields": {"NAME": "ok"}}) is True


@pytest.mark.parametrize(
    "body",
    [
        {"readonly_records": {"invoice": [1]}},
        {"readonly_records": {"contact": [0]}},
        {"readonly_records": {"contact": ["1"]}},
        {"readonly_records": ["contact"]},
    ],
)
def test_bad_readonly_records_are_refused(sandbox: Sandbox, body: dict[str, Any]) -> None:
    answer = sandbox.control("config", body)
    assert answer.status_code == 400 and "readonly_records" in answer.json()["error"]
