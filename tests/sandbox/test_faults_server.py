"""Server-side faults a client must survive: SQL errors after or instead of the write, proxy/WAF
HTML pages, a renamed portal's redirect, and requests cut off on arrival that still run later
(docs/bitrix24.md §0 facts 15 and 18, §1.4, §3)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from app.sandbox import Emulator, create_emulator_app
from app.sandbox.faults import html_page
from tests.sandbox.conftest import WEBHOOK, Sandbox, quiet_config
from tests.servers import running

SQL_ERROR = {"error": "ERROR_CORE", "error_description": "SQL query error!"}


def wait_until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- SQL errors ----------------------------------------------------------------------------------


def test_an_sql_error_is_a_500_after_the_record_was_written(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"sql_errors": 1})
    response = sandbox.call("crm.lead.add", {"fields": {"TITLE": "written", "ORIGIN_ID": "s-1"}})
    assert response.status_code == 500 and response.json() == SQL_ERROR
    assert [r["TITLE"] for r in sandbox.records("lead")] == ["written"]  # outcome unknown
    assert sandbox.call("crm.lead.add", {"fields": {"TITLE": "next"}}).status_code == 200
    assert sandbox.state()["counts"]["fault_sql"] == 1
    assert sandbox.client.get("/_control/faults").json()["sql_errors"] == 0


def test_an_sql_error_without_commit_writes_nothing_and_skips_reads(sandbox: Sandbox) -> None:
    sandbox.ok("crm.deal.add", {"fields": {"TITLE": "D"}})
    sandbox.control("faults", {"sql_errors": 1, "sql_error_commits": False})
    assert sandbox.call("crm.deal.list").status_code == 200  # reads are not counted
    response = sandbox.call("crm.deal.update", {"id": 1, "fields": {"TITLE": "changed"}})
    assert response.status_code == 500 and response.json() == SQL_ERROR
    assert sandbox.records("deal")[0]["TITLE"] == "D"


def test_inside_a_batch_an_sql_error_is_only_in_result_error(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"sql_errors": 1})
    cmd = {
        "me": "profile",
        "a": "crm.contact.add?fields[NAME]=A",
        "b": "crm.deal.add?fields[TITLE]=never&fields[CONTACT_ID]=$result[a]",
    }
    response = sandbox.call("batch", {"halt": 1, "cmd": cmd})
    assert response.status_code == 200
    outer = response.json()["result"]
    assert outer["result"] == {"me": sandbox.ok("profile")}
    assert outer["result_error"] == {"a": SQL_ERROR}
    assert len(sandbox.records("contact")) == 1  # committed before the error
    assert sandbox.records("deal") == []  # halt stopped the batch


def test_sql_errors_by_chance(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"sql_error_rate": 0.5, "sql_error_commits": False})
    statuses = [
        sandbox.call("crm.lead.add", {"fields": {"TITLE": str(i)}}).status_code for i in range(40)
    ]
    assert 8 <= statuses.count(500) <= 32 and set(statuses) == {200, 500}
    assert len(sandbox.records("lead")) == statuses.count(200)


# --- HTML pages ----------------------------------------------------------------------------------


def test_html_errors_answer_a_waf_page_before_anything_runs(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"html_errors": 2})
    first = sandbox.call("batch", {"cmd": {"a": "crm.lead.add?fields[TITLE]=x"}})
    assert first.status_code == 403 and first.headers["content-type"].startswith("text/html")
    assert "<title>403 Forbidden</title>" in first.text and first.text == html_page(403)
    sandbox.control("faults", {"html_status": 502})
    second = sandbox.call("crm.lead.add", {"fields": {"TITLE": "x"}})
    assert second.status_code == 502 and "502 Bad Gateway" in second.text
    assert sandbox.records("lead") == []
    assert sandbox.call("crm.lead.add", {"fields": {"TITLE": "x"}}).status_code == 200
    state = sandbox.state()
    assert state["counts"]["fault_html"] == 2
    assert [r["fault"] for r in state["requests"]] == ["html", "html", None]


def test_html_errors_by_chance(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"html_error_rate": 1.0, "html_status": 429})
    assert sandbox.call("profile").status_code == 429
    sandbox.control("faults", {"html_error_rate": 0})
    assert sandbox.call("profile").status_code == 200


# --- a renamed portal ----------------------------------------------------------------------------


def test_a_moved_portal_redirects_to_the_new_host_which_serves() -> None:
    emulator = Emulator(quiet_config())
    app = create_emulator_app(emulator)
    with running(app) as old, running(app) as new:
        emulator.update_faults({"moved_to": new.url})
        with httpx.Client(base_url=old.url, follow_redirects=False) as client:
            response = client.post(
                WEBHOOK + "crm.lead.add.json?x=1", json={"fields": {"TITLE": "t"}}
            )
        assert response.status_code == 302
        assert response.headers["location"] == f"{new.url}{WEBHOOK}crm.lead.add.json?x=1"
        assert emulator.store.records["lead"] == {}
        with httpx.Client(base_url=new.url) as client:
            moved = client.post(WEBHOOK + "crm.lead.add", json={"fields": {"TITLE": "t"}})
        assert moved.status_code == 200 and moved.json()["result"] == 1
        requests = emulator.snapshot()["requests"]
        assert isinstance(requests, list)
        assert [(r["status"], r["fault"]) for r in requests] == [(302, "moved"), (200, None)]


# --- requests cut off on arrival -----------------------------------------------------------------


def test_a_late_add_drops_the_connection_then_runs(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"late_requests": 1, "late_seconds": 0.4})
    started = time.monotonic()
    with pytest.raises(httpx.RemoteProtocolError):  # no status line at all
        sandbox.call("crm.lead.add", {"fields": {"TITLE": "late", "ORIGIN_ID": "s-9"}})
    assert time.monotonic() - started < 0.4
    assert sandbox.records("lead") == []  # a look-up now misses it
    [entry] = sandbox.state()["requests"]
    assert (entry["method"], entry["status"], entry["fault"]) == ("crm.lead.add", None, "late")
    wait_until(lambda: sandbox.records("lead"))
    assert time.monotonic() - started >= 0.4
    [lead] = sandbox.records("lead")
    assert lead["ORIGIN_ID"] == "s-9"
    state = sandbox.state()
    assert state["counts"]["late_completions"] == 1 and state["counts"]["fault_late"] == 1
    assert state["requests"][0]["status"] == 200


def test_only_requests_that_add_are_cut_off(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"late_add_rate": 1.0, "late_seconds": 0.2})
    assert sandbox.call("crm.lead.list").status_code == 200
    assert sandbox.call("batch", {"cmd": {"p": "profile"}}).status_code == 200
    with pytest.raises(httpx.RemoteProtocolError):
        sandbox.call("batch", {"cmd": {"p": "profile", "l": "crm.lead.add?fields[TITLE]=b"}})
    wait_until(lambda: sandbox.state()["counts"].get("late_completions") == 1)
    assert [r["TITLE"] for r in sandbox.records("lead")] == ["b"]


def test_a_reset_forgets_a_pending_late_request(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"late_requests": 1, "late_seconds": 0.2})
    with pytest.raises(httpx.RemoteProtocolError):
        sandbox.call("crm.lead.add", {"fields": {"TITLE": "late"}})
    sandbox.control("reset", {})
    time.sleep(0.4)
    assert sandbox.records("lead") == [] and "late_completions" not in sandbox.state()["counts"]


def test_a_late_request_is_admitted_by_the_bucket_on_arrival(sandbox: Sandbox) -> None:
    sandbox.emulator.update_config({"rate_per_second": 0.001, "burst": 1})
    sandbox.control("faults", {"late_requests": 1, "late_seconds": 0.1})
    with pytest.raises(httpx.RemoteProtocolError):
        sandbox.call("crm.lead.add", {"fields": {"TITLE": "late"}})
    assert sandbox.call("profile").status_code == 503  # the bucket is full
    wait_until(lambda: sandbox.records("lead"))


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"sql_errors": -1},
        {"sql_errors": 1.5},
        {"sql_error_rate": 1.5},
        {"sql_error_commits": "yes"},
        {"html_errors": True},
        {"html_status": 99},
        {"html_status": "403"},
        {"html_error_rate": -0.1},
        {"moved_to": "ftp://x"},
        {"moved_to": "http://127.0.0.1:5678/rest"},
        {"moved_to": 5},
        {"late_add_rate": 2},
        {"late_seconds": -1},
        {"late_requests": "1"},
        {"sql_errors": 1, "outage": "yes"},
    ],
)
def test_bad_new_fault_settings_are_refused(sandbox: Sandbox, body: dict[str, object]) -> None:
    response = sandbox.control("faults", body)
    assert response.status_code == 400
    faults = sandbox.client.get("/_control/faults").json()
    assert faults["sql_errors"] == 0 and faults["moved_to"] is None and faults["html_status"] == 403


def test_new_fault_defaults_and_reset(sandbox: Sandbox) -> None:
    faults = sandbox.client.get("/_control/faults").json()
    assert faults["sql_error_commits"] is True and faults["late_seconds"] == 20.0
    changed = sandbox.control("faults", {"moved_to": "http://127.0.0.1:1", "late_requests": 2})
    assert changed.json()["moved_to"] == "http://127.0.0.1:1"
    sandbox.control("faults", {"moved_to": None})
    assert sandbox.client.get("/_control/faults").json()["moved_to"] is None
