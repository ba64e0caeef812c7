"""The emulator answers like the recorded portal (tests/fixtures/responses.jsonl) and keeps every
recorded getTrace() string byte for byte however it is sent (tests/fixtures/traces.jsonl)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from tests.sandbox.conftest import FORM, WEBHOOK, Sandbox, fixture_lines

RESPONSES = fixture_lines("responses.jsonl")
TRACES = [line["trace"] for line in fixture_lines("traces.jsonl")]
TIME_LIMITED_KEY = "592dcd1e-cd14-410f-bab5-76b3ede717dd"


def _wrong_secret(s: Sandbox) -> httpx.Response:
    return s.client.post("/rest/1/not-the-secret/crm.lead.add", json={"fields": {}})


def _no_crm_scope(s: Sandbox) -> httpx.Response:
    s.emulator.update_config({"scopes": ["user", "basic"]})
    return s.call("crm.lead.add", {"fields": {"TITLE": "x"}})


def _unknown_method(s: Sandbox) -> httpx.Response:
    return s.call("crm.lead.frobnicate")


def _rate_limited(s: Sandbox) -> httpx.Response:
    s.emulator.update_config({"rate_per_second": 2, "burst": 1})
    s.call("profile")
    return s.call("profile")


def _missing_lead(s: Sandbox) -> httpx.Response:
    return s.call("crm.lead.get", {"id": 999})


def _lead_added(s: Sandbox) -> httpx.Response:
    return s.call("crm.lead.add", {"fields": {"TITLE": "Shop"}})


def _trace_added(s: Sandbox) -> httpx.Response:
    return s.call("crm.tracking.trace.add", {"TRACE": TRACES[2]})


def _trace_not_json(s: Sandbox) -> httpx.Response:
    return s.call("crm.tracking.trace.add", {"TRACE": "{not json"})


def _duplicate_hit(s: Sandbox) -> httpx.Response:
    for phone in ("+7 (999) 123-45-67", "79991234567"):
        s.ok("crm.contact.add", {"fields": {"NAME": "A", "PHONE": [{"VALUE": phone}]}})
    return s.call("crm.duplicate.findbycomm", {"type": "PHONE", "values": ["+79991234567"]})


def _duplicate_miss(s: Sandbox) -> httpx.Response:
    return s.call("crm.duplicate.findbycomm", {"type": "EMAIL", "values": ["nobody@example.com"]})


def _batch_contact(s: Sandbox) -> httpx.Response:
    command = "crm.contact.add?fields[NAME]=Ann&fields[PHONE][0][VALUE]=%2B491701234567"
    return s.call("batch", {"halt": 1, "cmd": {"order0000000000": command}})


def _batch_both_failed(s: Sandbox) -> httpx.Response:
    return s.call("batch", {"halt": 0, "cmd": ["crm.lead.get?id=0", "crm.lead.get?id=999"]})


def _batch_time_limited(s: Sandbox) -> httpx.Response:
    s.emulator.update_config({"operation_limit_seconds": 0.0})
    s.ok("crm.lead.list")  # spends the budget of crm.lead.list
    return s.call("batch", {"cmd": {TIME_LIMITED_KEY: "crm.lead.list?start=-1"}})


def _outage(s: Sandbox) -> httpx.Response:
    s.control("faults", {"outage": True})
    return s.call("batch", {"cmd": {"a": "profile"}})


SCENARIOS: dict[str, Callable[[Sandbox], httpx.Response]] = {
    "wrong webhook secret": _wrong_secret,
    "webhook without the crm scope": _no_crm_scope,
    "unknown method": _unknown_method,
    "request limit exceeded": _rate_limited,
    "crm.lead.get of a missing id": _missing_lead,
    "crm.lead.add, success": _lead_added,
    "crm.tracking.trace.add success": _trace_added,
    "crm.tracking.trace.add with TRACE that is not JSON": _trace_not_json,
    "crm.duplicate.findbycomm with a hit": _duplicate_hit,
    "crm.duplicate.findbycomm with no hit": _duplicate_miss,
    "crm.contact.add inside batch, success": _batch_contact,
    "batch where both commands failed": _batch_both_failed,
    "OPERATION_TIME_LIMIT inside a batch": _batch_time_limited,
    "a 503 under load with an HTML body": _outage,
}
# Not emulated: the emulator is served over plain http on loopback and in-process.
NOT_EMULATED = {"webhook called over plain http"}


def _scenario(what: str) -> Callable[[Sandbox], httpx.Response] | None:
    matches = [run for prefix, run in SCENARIOS.items() if what.startswith(prefix)]
    assert len(matches) <= 1, what
    return matches[0] if matches else None


def assert_like(actual: Any, expected: Any, path: str = "body") -> None:
    """Same JSON shape: dict keys present, lists of the same length, same scalar kinds."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{path}: {actual!r} is not an object"
        for key, value in expected.items():
            assert key in actual, f"{path}: missing {key!r}"
            assert_like(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list), f"{path}: {actual!r} is not a list"
        assert len(actual) == len(expected), f"{path}: {actual!r}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_like(a, e, f"{path}[{index}]")
    elif isinstance(expected, bool) or expected is None or isinstance(expected, str):
        assert type(actual) is type(expected), f"{path}: {actual!r} vs {expected!r}"
    else:
        assert isinstance(actual, int | float) and not isinstance(actual, bool), path


@pytest.mark.parametrize("fixture", RESPONSES, ids=[r["what"][:50] for r in RESPONSES])
def test_the_emulator_answers_like_the_recorded_portal(
    sandbox: Sandbox, fixture: dict[str, Any]
) -> None:
    what = fixture["what"]
    if any(what.startswith(prefix) for prefix in NOT_EMULATED):
        pytest.skip("HTTPS is not emulated")
    run = _scenario(what)
    assert run is not None, f"no scenario for fixture {what!r}"
    response = run(sandbox)

    assert response.status_code == fixture["http"], response.text
    if "body_text" in fixture:
        assert response.headers["content-type"].startswith(fixture["content_type"])
        assert response.text == fixture["body_text"]
        return
    body = response.json()
    expected = fixture["body"]
    if "error" in expected:
        assert body == expected
        return
    assert_like(body, expected)
    if isinstance(expected["result"], int):
        assert type(body["result"]) is int  # add methods return integer ids (§0 fact 7)
    if what.startswith(("batch where", "OPERATION_TIME_LIMIT")):
        assert body["result"] == expected["result"]  # errors and PHP-JSON shapes exactly
    if what.startswith("crm.contact.add inside batch"):
        outer = body["result"]
        assert outer["result_error"] == outer["result_total"] == outer["result_next"] == []


def _json_body(s: Sandbox, trace: str) -> None:
    s.ok("crm.lead.add", {"fields": {"TITLE": "json", "TRACE": trace}})


def _form_body(s: Sandbox, trace: str) -> None:
    body = urlencode({"fields[TITLE]": "form", "fields[TRACE]": trace}, quote_via=quote)
    assert s.form("crm.lead.add", body).status_code == 200


def _multipart_body(s: Sandbox, trace: str) -> None:
    files = {"fields[TITLE]": (None, "multipart"), "fields[TRACE]": (None, trace)}
    assert s.client.post(WEBHOOK + "crm.lead.add", files=files).status_code == 200


def _query_string(s: Sandbox, trace: str) -> None:
    assert (
        s.client.get(WEBHOOK + "crm.lead.add", params={"fields[TRACE]": trace}).status_code == 200
    )


def _batch_json(s: Sandbox, trace: str) -> None:
    command = "crm.lead.add?" + urlencode({"fields[TRACE]": trace}, quote_via=quote)
    outer = s.ok("batch", {"halt": 1, "cmd": {"lead": command}})
    assert outer["result_error"] == []


def _batch_form(s: Sandbox, trace: str) -> None:
    # The whole batch form-encoded: the command strings are encoded twice (§5.1).
    command = "crm.lead.add?" + urlencode({"fields[TRACE]": trace}, quote_via=quote)
    body = urlencode({"halt": "1", "cmd[lead]": command}, quote_via=quote)
    response = s.form("batch", body)
    assert response.status_code == 200
    assert response.json()["result"]["result_error"] == []


TRANSPORTS: dict[str, Callable[[Sandbox, str], None]] = {
    "json": _json_body,
    "form": _form_body,
    "multipart": _multipart_body,
    "query": _query_string,
    "batch-json": _batch_json,
    "batch-form": _batch_form,
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("trace", TRACES, ids=[f"trace{i}" for i in range(len(TRACES))])
def test_a_recorded_trace_is_kept_byte_for_byte(
    sandbox: Sandbox, trace: str, transport: str
) -> None:
    TRANSPORTS[transport](sandbox, trace)
    state = sandbox.state()
    [lead] = state["records"]["lead"]
    assert lead["TRACE"] == trace
    [stored] = state["traces"]
    assert stored["TRACE"] == trace
    assert stored["ENTITIES"] == [{"TYPE": "LEAD", "ID": lead["ID"]}]
    assert lead["TRACE_IDS"] == [stored["ID"]]


def test_the_fixture_scenarios_cover_every_recorded_response() -> None:
    uncovered = [
        r["what"]
        for r in RESPONSES
        if _scenario(r["what"]) is None
        and r["what"] not in NOT_EMULATED
        and not any(r["what"].startswith(p) for p in NOT_EMULATED)
    ]
    assert uncovered == []


def test_form_posts_are_accepted_with_a_charset(sandbox: Sandbox) -> None:
    headers = {"Content-Type": FORM["Content-Type"] + "; charset=UTF-8"}
    response = sandbox.client.post(
        WEBHOOK + "crm.lead.add", content="fields[TITLE]=%D0%90%D0%BD%D0%BD%D0%B0", headers=headers
    )
    assert response.status_code == 200
    assert sandbox.records("lead")[0]["TITLE"] == "Анна"
