"""Back-reference substitution exactly as CRestUtil::processBatchElement does it: after decoding,
in values and keys, up to the next whitespace, and never with an array inside text
(docs/bitrix24.md §0 fact 16, §5.2)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from app.sandbox.batch import _substitute_structure, parse_batch_query
from tests.sandbox.conftest import Sandbox

SECTIONS: dict[str, dict[str, object]] = {
    "result": {"lead": 7, "rows": [{"ID": "3", "TITLE": "abc"}], "text": "hello", "map": {"a": 1}},
    "next": {},
    "total": {"rows": 1},
    "time": {"lead": {"start": 1.5}},
    "error": {},
}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("$result[lead]", 7),  # a whole value keeps its type
        ("$result[map]", {"a": 1}),
        ("id $result[lead] end", "id 7 end"),
        ("$result[lead],x", 7),  # the match runs to the next whitespace and is replaced whole
        ("id=$result[lead];x", "id=7"),
        ("$result[rows][0][TITLE]", "abc"),
        ("$result[text][1]", "e"),  # a string is indexed by position
        ("see $result[map]", "see $result[map]"),  # an array is not put into text
        ("$result[nope]", SECTIONS["result"]),  # the walk stops: the whole section, raw
        ("x $result[nope]", "x $result[nope]"),
        ("x $RESULT[lead]", "x $RESULT[lead]"),  # matched, but the section is looked up as written
        ("$RESULT[lead]", None),
        ("$total[rows] of it", "1 of it"),
        ("took $time[lead][start]s", "took 1.5"),
        ("$result", "$result"),  # no path, no substitution
        ("price 5$", "price 5$"),
    ],
)
def test_values_are_substituted_as_the_server_does(value: str, expected: object) -> None:
    params = parse_batch_query("v=" + quote(value, safe=""), SECTIONS)
    assert params["v"] == expected


def test_substitution_happens_after_decoding_and_in_nested_values() -> None:
    encoded = "fields[COMMENTS]=" + quote("Ref: %24result[lead]", safe="")
    assert parse_batch_query(encoded, SECTIONS) == {"fields": {"COMMENTS": "Ref: %24result[lead]"}}
    encoded = "fields[COMMENTS]=" + quote("Ref: $result[lead]", safe="")
    assert parse_batch_query(encoded, SECTIONS) == {"fields": {"COMMENTS": "Ref: 7"}}


def test_keys_are_processed_with_no_section_names() -> None:
    # processBatchStructure passes no section list for keys: `$` and a bracket path match the
    # empty name, which resolves to null, so a key that is all match becomes "". parse_str never
    # leaves a `[...]` inside a key, so real keys come through unchanged.
    assert _substitute_structure({"$[x]": "1", "k": "2"}, SECTIONS, None) == {"": "1", "k": "2"}
    params = parse_batch_query("%24result[lead]=1&b=$result[lead]", SECTIONS)
    assert params == {"$result": {"lead": "1"}, "b": 7}


def test_a_submitted_reference_is_rewritten_inside_a_batch(sandbox: Sandbox) -> None:
    """The gateway's bug to avoid: form text that looks like a back-reference."""
    message = "Order $result[s0_lead] please, ask for $result[s0_lead][ID] too"
    cmd = {
        "s0_lead": "crm.lead.add?fields[TITLE]=first",
        "s1_lead": "crm.lead.add?fields[TITLE]=second&fields[COMMENTS]=" + quote(message, safe=""),
    }
    outer = sandbox.ok("batch", {"halt": 1, "cmd": cmd})
    assert outer["result"] == {"s0_lead": 1, "s1_lead": 2}
    # str_replace of the first match also rewrites the start of the second one.
    assert sandbox.records("lead")[1]["COMMENTS"] == "Order 1 please, ask for 1[ID] too"


def test_error_sections_are_referable_after_a_failure(sandbox: Sandbox) -> None:
    cmd: dict[str, Any] = {
        "bad": "crm.lead.get?id=999",
        "c": "crm.lead.add?fields[TITLE]=x&fields[COMMENTS]=$error_description[bad]"
        "&fields[SOURCE_DESCRIPTION]=$error[bad][error_description]",
    }
    outer = sandbox.ok("batch", {"halt": 0, "cmd": cmd})
    assert outer["result"] == {"c": 1}
    [lead] = sandbox.records("lead")
    # `$error_description[bad]` is read as `$error` + path `_description[bad]`: the error map.
    assert lead["COMMENTS"] == {"error": "", "error_description": "Not found"}
    assert lead["SOURCE_DESCRIPTION"] == "Not found"


def test_non_string_commands_are_skipped_but_counted(sandbox: Sandbox) -> None:
    cmd: dict[str, Any] = {"n": {"x": "crm.lead.add"}, "ok": "profile"}
    outer = sandbox.ok("batch", {"cmd": cmd})
    assert outer["result"] == {"ok": sandbox.ok("profile")}
    assert outer["result_error"] == []
