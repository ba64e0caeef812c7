"""Limits, fault injection, the control API, the record viewer and mounting under a prefix
(docs/bitrix24.md §3, §4, §11.1)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from app.sandbox import Emulator, EmulatorConfig, create_emulator_app
from app.sandbox.faults import OUTAGE_HTML, ResponseLost
from tests.sandbox.conftest import WEBHOOK, Sandbox, quiet_config
from tests.servers import running

QUERY_LIMIT = {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stored_leads(emulator: Emulator) -> list[Any]:
    records = emulator.snapshot()["records"]
    assert isinstance(records, dict)
    return list(records["lead"])


# --- limits --------------------------------------------------------------------------------------


def test_the_leaky_bucket_refuses_request_burst_plus_one_and_drains() -> None:
    clock = FakeClock()
    emulator = Emulator(EmulatorConfig(rate_per_second=2, burst=5), clock=clock)
    with running(create_emulator_app(emulator)) as server, httpx.Client(base_url=server.url) as c:
        statuses = [c.post(WEBHOOK + "profile").status_code for _ in range(6)]
        assert statuses == [200] * 5 + [503]
        refused = c.post(WEBHOOK + "crm.lead.add", json={"fields": {"TITLE": "x"}})
        assert refused.status_code == 503 and refused.json() == QUERY_LIMIT
        assert stored_leads(emulator) == []  # refused calls do not run
        clock.now += 0.5  # drains one request
        assert c.post(WEBHOOK + "profile").status_code == 200
        assert c.post(WEBHOOK + "profile").status_code == 503


def test_the_default_bucket_takes_fifty_at_once_within_a_second(sandbox: Sandbox) -> None:
    sandbox.emulator.config = quiet_config(rate_per_second=2.0, burst=50)
    started = time.monotonic()
    statuses = [sandbox.call("profile").status_code for _ in range(51)]
    assert time.monotonic() - started < 0.5  # otherwise the drain legitimately admits #51
    assert statuses == [200] * 50 + [503]
    assert sandbox.state()["counts"]["rejected_rate_limit"] == 1


def test_the_operation_time_limit_blocks_one_method_only(sandbox: Sandbox) -> None:
    sandbox.emulator.update_config({"operation_limit_seconds": 0.1, "operation_cost_seconds": 0.05})
    bodies = [sandbox.call("crm.lead.list") for _ in range(4)]
    assert [b.status_code for b in bodies] == [200, 200, 200, 429]
    assert bodies[2].json()["time"]["operating"] == pytest.approx(0.15)
    assert bodies[3].json() == {
        "error": "OPERATION_TIME_LIMIT",
        "error_description": "Method is blocked due to operation time limit.",
    }
    assert sandbox.call("crm.deal.list").status_code == 200
    first = bodies[0].json()["time"]
    assert first["operating_reset_at"] == int(first["start"] + 600)  # oldest bucket + 10 min


# --- credentials ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/rest/2/sandbox/profile", "/rest/1/wrong/profile", "/rest/1/sandbox2/crm.lead.add"]
)
def test_wrong_user_or_secret_is_invalid_credentials(sandbox: Sandbox, path: str) -> None:
    response = sandbox.client.post(path, json={})
    assert response.status_code == 401
    assert response.json()["error"] == "INVALID_CREDENTIALS"


def test_a_url_without_the_user_id_is_not_a_webhook(sandbox: Sandbox) -> None:
    response = sandbox.client.post("/rest/sandbox/crm.lead.add", json={})
    assert response.status_code == 401
    assert response.json() == {
        "error": "NO_AUTH_FOUND",
        "error_description": "Wrong authorization data",
    }


# --- faults --------------------------------------------------------------------------------------


def test_an_outage_answers_html_and_runs_nothing(sandbox: Sandbox) -> None:
    assert sandbox.control("faults", {"outage": True}).json()["outage"] is True
    response = sandbox.call("crm.lead.add", {"fields": {"TITLE": "x"}})
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == OUTAGE_HTML
    assert sandbox.records("lead") == []
    sandbox.control("faults", {"outage": False})
    assert sandbox.call("crm.lead.add", {"fields": {"TITLE": "x"}}).status_code == 200


def test_random_failures_happen_at_the_configured_rate_before_running(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"failure_rate": 0.5})
    statuses = [sandbox.call("crm.lead.add", {"fields": {}}).status_code for _ in range(40)]
    failed = [s for s in statuses if s != 200]
    assert 8 <= len(failed) <= 32
    assert set(failed) <= {500, 503}
    assert len(sandbox.records("lead")) == statuses.count(200)
    counts = sandbox.state()["counts"]
    assert counts["fault_failure"] == len(failed)


def test_latency_delays_every_answer(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"latency_ms": 150})
    started = time.monotonic()
    assert sandbox.call("profile").status_code == 200
    assert time.monotonic() - started >= 0.15


def test_a_lost_answer_drops_the_connection_after_committing(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"lose_responses": 1})
    with pytest.raises(httpx.TransportError):
        sandbox.call("crm.lead.add", {"fields": {"TITLE": "committed", "ORIGIN_ID": "s-1"}})
    [lead] = sandbox.records("lead")
    assert lead["ORIGIN_ID"] == "s-1"
    assert sandbox.client.get("/_control/faults").json()["lose_responses"] == 0
    assert sandbox.call("crm.lead.list", {"filter": {"=ORIGIN_ID": "s-1"}}).json()["total"] == 1
    state = sandbox.state()
    assert state["counts"]["lost_responses"] == 1
    assert state["requests"][0]["fault"] == "lost"


def test_a_hung_answer_times_the_client_out_after_committing(sandbox: Sandbox) -> None:
    sandbox.control("faults", {"hang_seconds": 0.6})
    with pytest.raises(httpx.ReadTimeout):
        sandbox.client.post(
            WEBHOOK + "crm.lead.add", json={"fields": {"TITLE": "slow"}}, timeout=0.2
        )
    assert [r["TITLE"] for r in sandbox.records("lead")] == ["slow"]
    sandbox.control("faults", {"hang_seconds": 0})


@pytest.mark.parametrize(
    "body",
    [
        {"outage": "yes"},
        {"failure_rate": 2},
        {"latency_ms": -1},
        {"explode": True},
        {"lose_responses": 1.5},
    ],
)
def test_bad_fault_settings_are_refused(sandbox: Sandbox, body: dict[str, object]) -> None:
    response = sandbox.control("faults", body)
    assert response.status_code == 400
    assert sandbox.client.get("/_control/faults").json()["outage"] is False


# --- control -------------------------------------------------------------------------------------


def test_reset_forgets_everything_and_restarts_ids(sandbox: Sandbox) -> None:
    sandbox.ok("crm.lead.add", {"fields": {"TITLE": "a"}})
    sandbox.control("faults", {"latency_ms": 5})
    assert sandbox.control("reset", {}).json() == {"ok": True}
    state = sandbox.state()
    assert state["records"] == {"lead": [], "deal": [], "contact": [], "company": [], "quote": []}
    assert state["traces"] == [] and state["requests"] == [] and state["counts"] == {}
    assert state["faults"]["latency_ms"] == 0
    assert sandbox.ok("crm.lead.add", {"fields": {"TITLE": "b"}}) == 1
    assert sandbox.state()["traces"][0]["ID"] == 1


def test_config_changes_at_run_time(sandbox: Sandbox) -> None:
    response = sandbox.control("config", {"secret": "rotated", "scopes": ["crm"]})
    assert response.status_code == 200 and response.json()["secret"] == "rotated"
    assert sandbox.call("profile").status_code == 401
    assert sandbox.client.post("/rest/1/rotated/scope", json={}).json()["result"] == ["crm"]
    assert sandbox.control("config", {"burst": "many"}).status_code == 400
    assert sandbox.control("config", {"user_id": 5}).status_code == 400


def test_the_request_log_records_method_status_and_error(sandbox: Sandbox) -> None:
    sandbox.ok("crm.lead.add", {"fields": {"TITLE": "a"}})
    sandbox.call("crm.lead.get", {"id": 5})
    requests = sandbox.state()["requests"]
    assert [(r["method"], r["status"], r["error"]) for r in requests] == [
        ("crm.lead.add", 200, None),
        ("crm.lead.get", 400, ""),
    ]
    assert all(isinstance(r["at"], float) for r in requests)


# --- viewer and mounting -------------------------------------------------------------------------


def test_the_viewer_lists_records_newest_first_and_escapes_them(sandbox: Sandbox) -> None:
    trace = '{"url":"https://x/</pre><script>alert(1)</script>"}'
    sandbox.ok("crm.lead.add", {"fields": {"TITLE": "<b>first</b>", "TRACE": trace}})
    sandbox.ok(
        "crm.lead.add", {"fields": {"TITLE": "second", "UTM_SOURCE": "google", "ORIGIN_ID": "o-2"}}
    )
    response = sandbox.client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert "<script>" not in page and "<b>first" not in page
    assert "&lt;b&gt;first&lt;/b&gt;" in page
    assert "&lt;/pre&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.index("second") < page.index("&lt;b&gt;first")
    assert "UTM_SOURCE=google" in page and "o-2" in page
    assert 'href="/_control/state"' in page


async def test_mounted_under_a_prefix_it_serves_rest_viewer_and_lost_answers() -> None:
    emulator = Emulator(quiet_config())
    gateway = Starlette(routes=[Mount("/sandbox", app=create_emulator_app(emulator))])
    transport = httpx.ASGITransport(app=gateway)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        response = await client.post(
            "/sandbox" + WEBHOOK + "crm.lead.add", json={"fields": {"TITLE": "in-process"}}
        )
        assert response.json()["result"] == 1
        page = (await client.get("/sandbox/")).text
        assert 'href="/sandbox/_control/state"' in page and "in-process" in page
        assert "/sandbox/rest/1/sandbox/" in page

        emulator.update_faults({"lose_responses": 1})
        with pytest.raises(ResponseLost):  # in-process, the drop surfaces as the app's exception
            await client.post("/sandbox" + WEBHOOK + "crm.lead.add", json={"fields": {}})
        assert len(stored_leads(emulator)) == 2


def test_an_emulator_and_a_config_cannot_both_be_given() -> None:
    with pytest.raises(ValueError):
        create_emulator_app(Emulator(), config=EmulatorConfig())
    app = create_emulator_app(config=EmulatorConfig(secret="s"))
    assert app.state.emulator.config.secret == "s"


def test_handle_runs_methods_without_http() -> None:
    emulator = Emulator()
    status, body = emulator.handle("CRM.LEAD.ADD.json", {"fields": {"TITLE": "direct"}})
    assert (status, body["result"]) == (200, 1)
    status, body = emulator.handle("crm.lead.get", {"id": 1})
    assert status == 200 and body["result"]["TITLE"] == "direct"  # type: ignore[index]
