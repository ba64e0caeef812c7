"""The portal's custom and admin-required fields, set through the config: `crm.*.fields` lists
them, and an add without a required field is refused as the portal does (docs/bitrix24.md §6.1)."""

from __future__ import annotations

from tests.sandbox.conftest import Sandbox


def test_custom_fields_of_the_config_are_listed_by_crm_fields(sandbox: Sandbox) -> None:
    assert "UF_CRM_CITY" not in sandbox.ok("crm.lead.fields")
    answer = sandbox.control("config", {"user_fields": {"lead": ["UF_CRM_CITY"]}})
    assert answer.status_code == 200
    assert answer.json()["user_fields"] == {"lead": ["UF_CRM_CITY"]}
    city = sandbox.ok("crm.lead.fields")["UF_CRM_CITY"]
    assert city["isDynamic"] is True and city["isRequired"] is False
    assert city["type"] == "string" and city["formLabel"] == "UF_CRM_CITY"
    assert "UF_CRM_CITY" not in sandbox.ok("crm.deal.fields")


def test_an_add_without_a_required_field_is_refused_and_listed_as_required(
    sandbox: Sandbox,
) -> None:
    sandbox.control(
        "config",
        {
            "user_fields": {"lead": ["UF_CRM_CITY"]},
            "required_fields": {"lead": ["UF_CRM_CITY", "PHONE"]},
        },
    )
    assert sandbox.ok("crm.lead.fields")["UF_CRM_CITY"]["isRequired"] is True
    assert sandbox.ok("crm.lead.fields")["PHONE"]["isRequired"] is True
    refused = sandbox.call(
        "crm.lead.add", {"fields": {"TITLE": "x", "UF_CRM_CITY": " ", "PHONE": []}}
    )
    assert refused.status_code == 400
    assert refused.json() == {
        "error": "",
        "error_description": 'The field "UF_CRM_CITY" is required.<br />'
        'The field "PHONE" is required.<br />',
    }
    assert sandbox.records("lead") == []
    fields = {"TITLE": "x", "UF_CRM_CITY": "Berlin", "PHONE": [{"VALUE": "+49 170 1"}]}
    assert sandbox.ok("crm.lead.add", {"fields": fields}) == 1
    assert sandbox.ok("crm.deal.add", {"fields": {"TITLE": "not required on deals"}}) == 1

    sandbox.control("config", {"required_fields": {}})  # the admin relaxes the rule
    assert sandbox.ok("crm.lead.add", {"fields": {"TITLE": "y"}}) == 2


def test_a_required_field_refuses_the_add_inside_a_batch_too(sandbox: Sandbox) -> None:
    sandbox.control("config", {"required_fields": {"lead": ["UF_CRM_CITY"]}})
    result = sandbox.ok(
        "batch", {"halt": 0, "cmd": {"a": "crm.lead.add?fields[TITLE]=a", "b": "crm.lead.list"}}
    )
    assert result["result_error"]["a"] == {
        "error": "",
        "error_description": 'The field "UF_CRM_CITY" is required.<br />',
    }
    assert result["result"]["b"] == []


def test_bad_field_config_is_refused_naming_the_key(sandbox: Sandbox) -> None:
    for body in (
        {"user_fields": {"invoice": ["UF_CRM_X"]}},
        {"user_fields": {"lead": ["CITY"]}},
        {"user_fields": ["UF_CRM_X"]},
        {"required_fields": {"lead": "UF_CRM_X"}},
        {"required_fields": {"lead": [""]}},
    ):
        answer = sandbox.control("config", body)
        assert answer.status_code == 400, body
        assert next(iter(body)) in answer.json()["error"]
    assert sandbox.client.get("/_control/config").json()["required_fields"] == {}
