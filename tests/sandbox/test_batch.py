"""`batch` over real HTTP (docs/bitrix24.md §5): sequential commands, `$result[...]` references,
`halt`, the 50-command cap, per-command errors, and PHP-JSON shapes of the answer."""

from __future__ import annotations

from urllib.parse import quote

from tests.sandbox.conftest import Sandbox

TRACE = '{"url":"https://shop.example/?a=1&b=2#x","tags":{"list":{"utm_source":"google"}}}'


def test_a_contact_deal_trace_chain_resolves_result_references(sandbox: Sandbox) -> None:
    cmd = {
        "company": "crm.company.add?fields[TITLE]=ACME%20%26%20Sons&fields[ORIGIN_ID]=s1:company",
        "contact": "crm.contact.add?fields[NAME]=Ann&fields[COMPANY_ID]=$result[company]"
        "&fields[PHONE][0][VALUE]=%2B491701234567&fields[ORIGIN_ID]=s1:contact",
        "deal": "crm.deal.add?fields[TITLE]=Order%20for%20$result[contact]"
        "&fields[CONTACT_ID]=$result[contact]&fields[COMPANY_ID]=$result[company]"
        "&fields[ORIGIN_ID]=s1",
        "trace": f"crm.tracking.trace.add?TRACE={quote(TRACE, safe='')}"
        "&ENTITIES[0][TYPE]=DEAL&ENTITIES[0][ID]=$result[deal]"
        "&ENTITIES[1][TYPE]=CONTACT&ENTITIES[1][ID]=$result[contact]"
        "&ENTITIES[2][TYPE]=COMPANY&ENTITIES[2][ID]=$result[company]",
    }
    response = sandbox.call("batch", {"halt": 1, "cmd": cmd})
    assert response.status_code == 200
    outer = response.json()["result"]
    assert outer["result"] == {"company": 1, "contact": 1, "deal": 1, "trace": 4}
    assert outer["result_error"] == [] and outer["result_total"] == []
    assert set(outer["result_time"]) == set(cmd)

    state = sandbox.state()
    [deal] = state["records"]["deal"]
    assert deal["CONTACT_ID"] == 1 and deal["COMPANY_ID"] == 1  # whole-value references: raw ints
    assert deal["TITLE"] == "Order for 1"  # embedded references: text
    assert state["records"]["contact"][0]["PHONE"][0]["VALUE"] == "+491701234567"
    package_trace = state["traces"][-1]
    assert package_trace["TRACE"] == TRACE
    assert package_trace["ENTITIES"] == [
        {"TYPE": "DEAL", "ID": 1},
        {"TYPE": "CONTACT", "ID": 1},
        {"TYPE": "COMPANY", "ID": 1},
    ]
    assert state["records"]["company"][0]["TRACE_IDS"] == [1, 4]
    [request] = state["requests"]
    assert request["method"] == "batch" and request["status"] == 200
    assert request["commands"] == [
        "crm.company.add",
        "crm.contact.add",
        "crm.deal.add",
        "crm.tracking.trace.add",
    ]


def test_halt_stops_at_the_first_failing_command(sandbox: Sandbox) -> None:
    cmd = {
        "a": "crm.lead.add?fields[TITLE]=first",
        "b": "crm.company.add?fields[TITLE]=",
        "c": "crm.lead.add?fields[TITLE]=never",
    }
    outer = sandbox.ok("batch", {"halt": 1, "cmd": cmd})
    assert outer["result"] == {"a": 1}
    assert outer["result_error"] == {
        "b": {"error": "", "error_description": 'The field "Company name" is required.<br />'}
    }
    assert [r["TITLE"] for r in sandbox.records("lead")] == ["first"]


def test_without_halt_every_command_runs_and_references_to_failures_are_garbage(
    sandbox: Sandbox,
) -> None:
    cmd = {
        "a": "crm.lead.add?fields[TITLE]=first",
        "bad": "crm.lead.get?id=999",
        "c": "crm.lead.add?fields[TITLE]=after&fields[COMMENTS]=ref%20$result[bad]"
        "&fields[ORIGIN_ID]=$result[bad][ID]",
    }
    outer = sandbox.ok("batch", {"halt": 0, "cmd": cmd})
    assert outer["result"] == {"a": 1, "c": 2}
    assert outer["result_error"] == {"bad": {"error": "", "error_description": "Not found"}}
    second = sandbox.records("lead")[1]
    # Embedded, an array is not substituted: the reference text stays (processBatchElement).
    assert second["COMMENTS"] == "ref $result[bad]"
    assert second["ORIGIN_ID"] == {"a": 1}  # whole value: the whole result map, raw


def test_deeper_paths_index_into_results(sandbox: Sandbox) -> None:
    sandbox.ok("crm.lead.add", {"fields": {"TITLE": "source", "ORIGIN_ID": "o-1"}})
    cmd = {
        "found": "crm.lead.list?filter[=ORIGIN_ID]=o-1&select[]=ID&select[]=TITLE",
        "copy": "crm.lead.add?fields[TITLE]=copy%20of%20$result[found][0][TITLE]"
        "&fields[ORIGIN_ID]=$result[found][0][ID]",
        "count": "crm.lead.add?fields[COMMENTS]=total%20$total[found]",
    }
    outer = sandbox.ok("batch", {"cmd": cmd})
    assert outer["result_total"] == {"found": 1}
    records = sandbox.records("lead")
    assert records[1]["TITLE"] == "copy of source" and records[1]["ORIGIN_ID"] == "1"
    assert records[2]["COMMENTS"] == "total 1"


def test_more_than_fifty_commands_fail_the_extras(sandbox: Sandbox) -> None:
    cmd = {f"c{i:02d}": f"crm.lead.add?fields[TITLE]=n{i}" for i in range(53)}
    outer = sandbox.ok("batch", {"cmd": cmd})
    assert len(outer["result"]) == 50
    assert outer["result_error"] == {
        key: {
            "error": "ERROR_BATCH_LENGTH_EXCEEDED",
            "error_description": "Max batch length exceeded",
        }
        for key in ("c50", "c51", "c52")
    }
    assert len(sandbox.records("lead")) == 50


def test_a_nested_batch_or_an_unknown_method_fails_only_its_command(sandbox: Sandbox) -> None:
    cmd = {"inner": "batch?cmd[x]=profile", "nope": "crm.nope", "me": "profile"}
    outer = sandbox.ok("batch", {"cmd": cmd})
    assert outer["result"]["me"]["ID"] == "1"
    assert outer["result_error"] == {
        "inner": {
            "error": "ERROR_BATCH_METHOD_NOT_ALLOWED",
            "error_description": "Method is not allowed for batch usage",
        },
        "nope": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"},
    }


def test_numeric_command_keys_give_list_shaped_maps(sandbox: Sandbox) -> None:
    outer = sandbox.ok("batch", {"cmd": ["crm.lead.add?fields[TITLE]=a", "crm.lead.list?start=-1"]})
    assert outer["result"][0] == 1
    assert outer["result"][1][0]["TITLE"] == "a"
    assert isinstance(outer["result_time"], list) and outer["result_error"] == []


def test_commands_are_checked_against_the_webhook_scopes(sandbox: Sandbox) -> None:
    sandbox.emulator.update_config({"scopes": ["user"]})
    outer = sandbox.ok("batch", {"halt": "Y", "cmd": {"me": "profile", "lead": "crm.lead.list"}})
    assert outer["result_error"]["lead"]["error"] == "insufficient_scope"
    assert outer["result"]["me"]["ID"] == "1"


def test_a_batch_is_one_request_however_many_commands(sandbox: Sandbox) -> None:
    sandbox.emulator.update_config({"rate_per_second": 0.001, "burst": 2})
    cmd = {f"c{i}": "profile" for i in range(50)}
    assert len(sandbox.ok("batch", {"cmd": cmd})["result"]) == 50
    assert len(sandbox.ok("batch", {"cmd": cmd})["result"]) == 50
    assert sandbox.call("batch", {"cmd": cmd}).status_code == 503
    counts = sandbox.state()["counts"]
    assert (counts["requests"], counts["batch"], counts["rejected_rate_limit"]) == (3, 3, 1)
