"""The trace check: valid traces pass byte for byte, ids pass only where the form allows them,
the rest is flagged."""

import json
from pathlib import Path

import pytest

from app.trace import Trace, TraceProblem, check_trace, utm_from_trace, utm_only_trace

FIXTURES = Path(__file__).parents[1] / "fixtures" / "traces.jsonl"


def fixture_traces() -> list[str]:
    return [json.loads(line)["trace"] for line in FIXTURES.read_text().splitlines() if line]


@pytest.mark.parametrize("raw", fixture_traces())
def test_fixture_traces_are_kept_byte_for_byte(raw: str) -> None:
    assert check_trace(raw).value == raw
    assert check_trace(raw).problem is None


def test_whitespace_and_key_order_are_not_rewritten() -> None:
    raw = ' {"tags": {"list": {"utm_source": "Google"}}, "url" : "https://x/"} '
    assert check_trace(raw) == Trace(value=raw, utm={"utm_source": "Google"})


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, Trace()),
        ("", Trace()),
        ("   ", Trace()),
        ("0", Trace(problem=TraceProblem.NOT_OBJECT)),
        (-5, Trace(problem=TraceProblem.NOT_OBJECT)),
        (True, Trace(problem=TraceProblem.NOT_OBJECT)),
        ("[1, 2]", Trace(problem=TraceProblem.NOT_OBJECT)),
        ('"a string"', Trace(problem=TraceProblem.NOT_OBJECT)),
        ("-3", Trace(problem=TraceProblem.NOT_OBJECT)),
        ("{broken", Trace(problem=TraceProblem.NOT_JSON)),
        ("not json at all", Trace(problem=TraceProblem.NOT_JSON)),
        ('{"a": NaN}', Trace(problem=TraceProblem.NOT_JSON)),
        ('{"a": -Infinity}', Trace(problem=TraceProblem.NOT_JSON)),
        ([1], Trace(problem=TraceProblem.NOT_OBJECT)),
        (1.5, Trace(problem=TraceProblem.NOT_OBJECT)),
    ],
)
def test_trace_classification(raw: object, expected: Trace) -> None:
    assert check_trace(raw) == expected
    assert check_trace(raw, allow_ids=True) == expected


@pytest.mark.parametrize("raw", ["42", " 42\n", 42, "9223372036854775807"])
def test_a_trace_id_is_sent_only_where_the_form_allows_ids(raw: object) -> None:
    number = str(raw).strip()
    assert check_trace(raw, allow_ids=True) == Trace(value=number, is_id=True)
    # getTrace() never returns a number: elsewhere it could attach the record to anyone's trace.
    assert check_trace(raw, allow_ids=False) == Trace(problem=TraceProblem.ID_NOT_ALLOWED)
    assert check_trace(raw) == Trace(problem=TraceProblem.ID_NOT_ALLOWED)  # the default
    assert TraceProblem.ID_NOT_ALLOWED.value == "trace_id_not_allowed"


@pytest.mark.parametrize("raw", ["9223372036854775808", "9" * 5000, 2**63, "0" * 30 + "7"])
def test_a_number_beyond_the_portals_ids_is_no_trace_id(raw: object) -> None:
    # Never a crash either: Python refuses int() of more than 4300 digits.
    for allow_ids in (True, False):
        assert check_trace(raw, allow_ids=allow_ids) == Trace(problem=TraceProblem.NOT_OBJECT)


def test_an_object_from_a_json_body_is_serialised_compactly() -> None:
    trace = check_trace({"tags": {"list": {"utm_source": "ya"}}, "url": "https://ü.example/"})
    assert trace.value == '{"tags":{"list":{"utm_source":"ya"}},"url":"https://ü.example/"}'
    assert trace.utm == {"utm_source": "ya"}


def test_oversized_traces_are_flagged_not_sent() -> None:
    raw = json.dumps({"pages": {"list": [["https://x/" + "a" * 1000, 1, "t"]] * 70}})
    assert len(raw) > 64 * 1024
    assert check_trace(raw) == Trace(problem=TraceProblem.TOO_LARGE)
    assert check_trace(json.loads(raw)) == Trace(problem=TraceProblem.TOO_LARGE)
    assert check_trace(raw, max_bytes=len(raw)).value == raw


@pytest.mark.parametrize(
    ("parsed", "utm"),
    [
        (
            {"tags": {"list": {"utm_source": "Google-Maps", "utm_term": "x y"}}},
            {"utm_source": "Google-Maps", "utm_term": "x y"},
        ),
        ({"tags": {"list": []}}, {}),  # PHP's empty map
        ({"tags": {"list": {"utm_source": "", "utm_medium": None, "other": "z"}}}, {}),
        ({"tags": "nope"}, {}),
        ({}, {}),
        ({"tags": {"list": {"utm_campaign": 2026}}}, {"utm_campaign": "2026"}),
    ],
)
def test_utm_from_tags_keeps_case_and_ignores_junk(
    parsed: dict[str, object], utm: dict[str, str]
) -> None:
    assert utm_from_trace(parsed) == utm


def test_utm_only_trace_is_a_minimal_valid_trace() -> None:
    text = utm_only_trace({"utm_source": "google"})
    assert text == '{"tags":{"list":{"utm_source":"google"}}}'
    assert check_trace(text).utm == {"utm_source": "google"}
