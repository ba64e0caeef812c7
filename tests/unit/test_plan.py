"""The delivery plan's identity and safety rules (docs/bitrix24.md §0 facts 13, 14, 16, 17)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.bitrix import Ref
from app.delivery import plan
from app.store import Status, Submission

IDENTITY = plan.Identity(originator_id="b24-form-gateway", quote_field="UF_CRM_B24FG_ORIGIN")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def submission(
    records: dict[str, Any], *, main: str, unknown: bool = False, **kw: Any
) -> Submission:
    values: dict[str, Any] = {
        "id": "sub-1",
        "form_id": "f",
        "entity": main,
        "status": Status.DELIVERING,
        "created_at": NOW,
        "updated_at": NOW,
        "idempotency_key": None,
        "body_hash": "h",
        "fields": {},
        "crm": {"main": main, "records": records, "match": {}, "utm": {"utm_source": "g"}},
        "trace": '{"tags":{"list":{"utm_source":"g"}}}',
        "trace_is_id": False,
        "trace_problem": None,
        "attempts": 1,
        "next_attempt_at": NOW,
        "lease_until": None,
        "outcome_unknown": unknown,
        "last_error": None,
        "last_error_code": None,
        "bitrix_ids": {},
        "delivered_at": None,
    }
    values.update(kw)
    return Submission(**values)


def test_a_quote_is_marked_and_looked_up_by_its_custom_field_not_origin_id() -> None:
    pkg = plan.package(submission({"quote": {"TITLE": "Q"}}, main="quote", unknown=True))
    assert plan.origin_roles(pkg, known={}) == ["quote"]
    lookup = plan.origin_lookup("quote", ["sub-1", "sub-2"], identity=IDENTITY, key="o")
    assert lookup.method == "crm.quote.list"
    assert lookup.params["filter"] == {"@UF_CRM_B24FG_ORIGIN": ["sub-1", "sub-2"]}
    assert "UF_CRM_B24FG_ORIGIN" in lookup.params["select"]  # type: ignore[operator]
    [add] = plan.creates(pkg, identity=IDENTITY, known={}, prefix="").steps
    fields = add.params["fields"]
    assert isinstance(fields, dict)
    assert fields["UF_CRM_B24FG_ORIGIN"] == "sub-1" and "ORIGIN_ID" not in fields


def test_one_look_up_serves_many_submissions_and_maps_rows_back_by_their_marker() -> None:
    lookup = plan.origin_lookup("lead", ["a", "b", "c"], identity=IDENTITY, key="o")
    assert lookup.params["filter"] == {
        "@ORIGIN_ID": ["a", "b", "c"],
        "=ORIGINATOR_ID": "b24-form-gateway",
    }
    rows = [
        {"ID": "7", "ORIGIN_ID": "b", "ORIGINATOR_ID": "b24-form-gateway"},
        {"ID": "5", "ORIGIN_ID": "b", "ORIGINATOR_ID": "b24-form-gateway"},
        {"ID": "9", "ORIGIN_ID": "c", "ORIGINATOR_ID": "b24-form-gateway"},
    ]
    found = plan.origin_rows("lead", rows, ["a", "b", "c"], identity=IDENTITY)
    assert found == plan.OriginRows({"b": 5, "c": 9}, foreign=False, complete=True)
    full = [
        {"ID": str(i), "ORIGIN_ID": "b", "ORIGINATOR_ID": "b24-form-gateway"} for i in range(50)
    ]
    assert not plan.origin_rows("lead", full, ["a", "b"], identity=IDENTITY).complete


def test_a_look_up_never_adopts_a_row_whose_marker_differs() -> None:
    """A portal that dropped the filter returns every row: none of them is ours, and the
    answer proves nothing about absence either."""
    everyone = [{"ID": "3", "UF_CRM_B24FG_ORIGIN": None}, {"ID": "4", "UF_CRM_B24FG_ORIGIN": "x"}]
    rows = plan.origin_rows("quote", everyone, ["sub-1"], identity=IDENTITY)
    assert rows.found == {} and rows.foreign
    ours = [{"ID": "9", "UF_CRM_B24FG_ORIGIN": "sub-1"}]
    assert plan.origin_rows("quote", ours, ["sub-1"], identity=IDENTITY).found == {"sub-1": 9}
    foreign = [{"ID": "5", "ORIGIN_ID": "sub-1", "ORIGINATOR_ID": "another-app"}]
    rows = plan.origin_rows("lead", foreign, ["sub-1"], identity=IDENTITY)
    assert rows.found == {} and rows.foreign


def test_a_deal_gets_its_company_by_update_after_the_add() -> None:
    records = {"deal": {"TITLE": "D"}, "contact": {"NAME": "A"}, "company": {"TITLE": "C"}}
    pkg = plan.package(submission(records, main="deal"))
    steps = plan.creates(pkg, identity=IDENTITY, known={}, prefix="s0_").steps
    assert [s.role for s in steps] == ["company", "contact", "deal", plan.LINK, plan.TRACE]
    deal_fields = steps[2].params["fields"]
    assert isinstance(deal_fields, dict) and "COMPANY_ID" not in deal_fields
    assert steps[3].method == "crm.deal.update"
    assert steps[3].params == {"id": Ref("s0_deal"), "fields": {"COMPANY_ID": Ref("s0_company")}}
    done = plan.creates(
        pkg, identity=IDENTITY, known={"company": 1, "contact": 2, "deal": 3}, prefix=""
    ).steps
    assert [s.role for s in done] == [plan.LINK, plan.TRACE]


@pytest.mark.parametrize(
    ("value", "direct"),
    [
        ("$result[s0_lead]", True),
        ("call me at $RESULT[x] please", True),
        ("$results[x]", True),
        ("$error[s1_deal][error]", True),
        ("I paid $100 [cash]", False),
        ("$result only", False),
        ("plain text", False),
    ],
)
def test_values_that_a_batch_would_rewrite_go_in_direct_calls(value: str, direct: bool) -> None:
    pkg = plan.package(submission({"lead": {"TITLE": "L", "COMMENTS": value}}, main="lead"))
    steps = plan.creates(pkg, identity=IDENTITY, known={}, prefix="").steps
    assert plan.must_go_direct(steps) is direct


def test_refs_are_resolved_for_direct_calls() -> None:
    params = {"id": Ref("deal"), "fields": {"COMPANY_ID": Ref("company"), "X": "$result[y]"}}
    out = plan.with_ids(params, {"deal": 5, "company": 7})
    assert out == {"id": 5, "fields": {"COMPANY_ID": 7, "X": "$result[y]"}}


def test_a_refused_link_leaves_that_record_out_then_the_trace_is_given_up() -> None:
    denied = "You have no access to entity `CONTACT` with ID `12`."
    first = plan.after_trace_refusal(None, denied)
    assert first == "links_denied:CONTACT"
    records = {"deal": {"TITLE": "D"}, "contact": {"NAME": "A"}}
    pkg = plan.package(submission(records, main="deal", trace_problem=first))
    [trace] = plan.creates(
        pkg, identity=IDENTITY, known={"contact": 12, "deal": 3}, prefix=""
    ).steps
    assert trace.params["ENTITIES"] == [{"TYPE": "DEAL", "ID": 3}]
    bad_json = plan.after_trace_refusal(first, "Can not parse JSON in parameter `TRACE`.")
    assert plan.TraceState.parse(bad_json) == plan.TraceState(True, frozenset({"CONTACT"}))
    assert plan.TraceState.parse(plan.after_trace_refusal(bad_json, "again")).refused


def ask(kind: str, *values: str) -> plan.Step:
    params = {"type": kind, "values": list(values), "entity_type": "CONTACT"}
    return plan.Step("phone", "contact", "crm.duplicate.findbycomm", params)


def test_match_groups_pack_each_submission_whole_within_twenty_values() -> None:
    asks = [ask("PHONE", f"+1555000{n:03d}", f"+1555100{n:03d}") for n in range(15)]
    groups = plan.match_groups(asks, key="m_phone")
    assert [g.members for g in groups] == [tuple(range(10)), tuple(range(10, 15))]
    assert [len(g.step.params["values"]) for g in groups] == [20, 10]  # type: ignore[arg-type]
    assert [g.step.key for g in groups] == ["m_phone_0", "m_phone_1"]
    assert groups[0].step.params["type"] == "PHONE"
    assert groups[0].step.params["entity_type"] == "CONTACT"


def test_match_groups_ask_a_value_two_submissions_share_once() -> None:
    asks = [ask("EMAIL", "a@example.com"), ask("EMAIL", "a@example.com", "b@example.com")]
    [group] = plan.match_groups(asks, key="m_email")
    assert group.step.params["values"] == ["a@example.com", "b@example.com"]
    assert group.members == (0, 1)


def test_match_groups_give_a_full_submission_a_command_of_its_own() -> None:
    asks = [ask("PHONE", "+17770001"), ask("PHONE", *[f"+1555{n:04d}" for n in range(20)])]
    groups = plan.match_groups(asks, key="m")
    assert [g.members for g in groups] == [(0,), (1,)]


@pytest.mark.parametrize(
    ("answer", "nobody"),
    [
        ([], True),
        ({}, True),
        ({"CONTACT": []}, True),
        ({"CONTACT": [7]}, False),
        ({"CONTACT": ["7"]}, False),
        (None, True),
    ],
)
def test_nobody_matched_only_when_the_answer_names_no_contact(answer: Any, nobody: bool) -> None:
    assert plan.nobody_matched(answer) is nobody
