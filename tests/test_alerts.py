"""Alerts where people look: a submission that failed for good, a stalled delivery and its
recovery, told once through Bitrix24 notifications, e-mail and a chat webhook, rate-limited,
never with personal data, never holding up delivery.

Real servers throughout: the gateway and the emulator over HTTP, an aiosmtpd SMTP server, and a
uvicorn app receiving the webhook.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from app.alerts import Alerter, Backlog, Failure, WebhookChannel
from app.metrics import Metrics
from app.settings import Settings, SettingsError
from app.store import Status, Store
from tests.conftest import Gateway, Portal, wait_for
from tests.servers import RunningServer, free_port

MakeGateway = Callable[..., Awaitable[Gateway]]
VISITOR = {"name": "Ann Example", "phone": "+49 170 1234567", "email": "ann@example.com"}
PERSONAL = ("Ann", "Example", "1234567", "170 123", "ann@example.com")
REFUSAL = {"count": 10, "status": 400, "error": "", "description": "Access denied."}
IM_SCOPES = ["crm", "user", "im", "basic"]


@dataclass
class Inbox:
    """What the aiosmtpd server received: (recipients, subject, body) per message."""

    messages: list[tuple[list[str], str, str]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        message = message_from_bytes(content, policy=default_policy)
        body = message.get_body()
        text = body.get_content() if body is not None else ""
        self.messages.append((list(envelope.rcpt_tos), str(message["Subject"]), str(text)))
        return "250 OK"


@dataclass
class Hook:
    """A chat webhook: records each JSON body; answers `status`."""

    bodies: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    server: RunningServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"{self.server.url}/hook/secret-token"

    def texts(self) -> list[str]:
        return [str(body["text"]) for body in self.bodies]


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    yield handler, port
    controller.stop()


@pytest.fixture(scope="module")
def _hook_server() -> Iterator[Hook]:
    hook = Hook()

    async def receive(request: Request) -> Response:
        hook.bodies.append(await request.json())
        return JSONResponse({"ok": hook.status < 400}, hook.status)

    hook.server = RunningServer(
        Starlette(routes=[Route("/hook/{token}", receive, methods=["POST"])])
    )
    hook.server.start()
    yield hook
    hook.server.stop()


@pytest.fixture
def hook(_hook_server: Hook) -> Hook:
    _hook_server.bodies.clear()
    _hook_server.status = 200
    return _hook_server


def alert_settings(inbox: tuple[Inbox, int], hook: Hook, **more: Any) -> dict[str, Any]:
    return {
        "ALERT_BITRIX_USER_IDS": "1,7",
        "ALERT_SMTP_HOST": "127.0.0.1",
        "ALERT_SMTP_PORT": inbox[1],
        "ALERT_SMTP_STARTTLS": False,
        "ALERT_SMTP_FROM": "gateway@example.org",
        "ALERT_SMTP_TO": "ops@example.org,oncall@example.org",
        "ALERT_WEBHOOK_URL": hook.url,
        "ALERT_WEBHOOK_CHAT_ID": "-100123",
        **more,
    }


def notifications(portal: Portal) -> list[dict[str, Any]]:
    return list(portal.state()["notifications"])


async def submit(gateway: Gateway, fields: dict[str, str]) -> str:
    async with gateway.client() as client:
        response = await client.post("/forms/contact", data=fields)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def status_of(store: Store, submission_id: str) -> Status | None:
    row = await store.get(submission_id)
    return row.status if row is not None else None


async def alert_counts(gateway: Gateway) -> dict[tuple[str, str], float]:
    async with gateway.client() as client:
        text = (await client.get("/metrics")).text
    pattern = r'^gateway_alerts_total\{channel="(\w+)",result="(\w+)"\} ([0-9.e+]+)$'
    return {(c, r): float(v) for c, r, v in re.findall(pattern, text, re.MULTILINE)}


async def test_a_submission_refused_for_good_is_announced_once_per_channel_without_personal_data(
    portal: Portal, make_gateway: MakeGateway, inbox: tuple[Inbox, int], hook: Hook
) -> None:
    portal.control("config", {"scopes": IM_SCOPES})
    portal.faults(fail_methods={"crm.lead.add": REFUSAL})
    gateway = await make_gateway(portal, **alert_settings(inbox, hook))
    submission_id = await submit(gateway, VISITOR)
    store = await gateway.store()
    await wait_for(lambda: _is(store, submission_id, Status.FAILED))
    await wait_for(
        lambda: len(inbox[0].messages) and hook.bodies and len(notifications(portal)) == 2
    )
    await asyncio.sleep(0.5)  # more worker passes: nothing is announced again

    [(recipients, subject, body)] = inbox[0].messages
    assert recipients == ["ops@example.org", "oncall@example.org"]
    assert subject == "[b24-form-gateway] 1 submission failed"
    [webhook] = hook.bodies
    assert set(webhook) == {"text", "chat_id"} and webhook["chat_id"] == "-100123"
    notes = notifications(portal)
    assert sorted(n["USER_ID"] for n in notes) == [1, 7]
    for text in (body, webhook["text"], *(n["MESSAGE"] for n in notes)):
        assert f"{submission_id} (form contact): RejectedError after 1 attempt" in text
        assert not any(value in text for value in PERSONAL), text
        assert "TRACE" not in text
    counts = await alert_counts(gateway)
    assert {k: v for k, v in counts.items() if v} == {
        ("bitrix", "sent"): 1,
        ("email", "sent"): 1,
        ("webhook", "sent"): 1,
    }


async def test_two_failures_get_an_alert_each_until_the_hourly_limit_then_are_held_back(
    portal: Portal, make_gateway: MakeGateway, inbox: tuple[Inbox, int], hook: Hook
) -> None:
    portal.control("config", {"scopes": IM_SCOPES})
    portal.faults(fail_methods={"crm.lead.add": REFUSAL})
    settings = alert_settings(inbox, hook, ALERT_BITRIX_USER_IDS="1", ALERT_MAX_PER_HOUR=1)
    gateway = await make_gateway(portal, **settings)
    store = await gateway.store()
    first = await submit(gateway, {"phone": "+1555000001"})
    await wait_for(lambda: _is(store, first, Status.FAILED))
    second = await submit(gateway, {"phone": "+1555000002"})
    await wait_for(lambda: _is(store, second, Status.FAILED))
    await wait_for(lambda: _all_counted(gateway, "suppressed"))

    assert len(inbox[0].messages) == len(hook.bodies) == len(notifications(portal)) == 1
    for text in (
        inbox[0].messages[0][2],
        hook.bodies[0]["text"],
        notifications(portal)[0]["MESSAGE"],
    ):
        assert first in text and second not in text
    counts = await alert_counts(gateway)
    for channel in ("bitrix", "email", "webhook"):
        assert counts[(channel, "sent")] == 1 and counts[(channel, "suppressed")] == 1


async def test_a_stall_longer_than_the_setting_is_announced_once_and_its_recovery_once(
    portal: Portal, make_gateway: MakeGateway, inbox: tuple[Inbox, int], hook: Hook
) -> None:
    portal.control("config", {"scopes": IM_SCOPES})
    portal.faults(outage=True)
    gateway = await make_gateway(
        portal, **alert_settings(inbox, hook, ALERT_BITRIX_USER_IDS="1", ALERT_STALL_MINUTES=0.02)
    )
    submission_id = await submit(gateway, {"phone": "+1555000003"})
    await wait_for(lambda: any("stalled" in t for t in hook.texts()))
    await asyncio.sleep(1.5)  # several checks while still stalled: announced once
    portal.faults(outage=False)
    store = await gateway.store()
    await wait_for(lambda: _is(store, submission_id, Status.DELIVERED))
    await wait_for(lambda: any("recovered" in t for t in hook.texts()))
    await wait_for(lambda: len(inbox[0].messages) == 2)
    await asyncio.sleep(1.0)

    subjects = [m[1] for m in inbox[0].messages]
    assert subjects == [
        "[b24-form-gateway] delivery stalled",
        "[b24-form-gateway] delivery recovered",
    ]
    assert [t.split("\n")[0] for t in hook.texts()] == subjects
    assert "1 submission(s) wait" in hook.texts()[0]
    # The portal itself was down: its notification of the stall could not be sent; the
    # recovery reached it.
    [note] = notifications(portal)
    assert "delivery recovered" in note["MESSAGE"]
    counts = await alert_counts(gateway)
    assert counts[("bitrix", "failed")] == 1 and counts[("bitrix", "sent")] == 1
    assert counts[("webhook", "sent")] == counts[("email", "sent")] == 2


async def test_a_failing_channel_is_logged_and_counted_and_delivery_goes_on(
    portal: Portal,
    make_gateway: MakeGateway,
    hook: Hook,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No SMTP server listens there, and the webhook has no `im` scope (the emulator's default).
    settings = {
        "ALERT_BITRIX_USER_IDS": "1",
        "ALERT_SMTP_HOST": "127.0.0.1",
        "ALERT_SMTP_PORT": free_port(),
        "ALERT_SMTP_STARTTLS": False,
        "ALERT_SMTP_FROM": "gateway@example.org",
        "ALERT_SMTP_TO": "ops@example.org",
        "ALERT_SMTP_USER": "mailer",
        "ALERT_SMTP_PASSWORD": "smtp-password-42",
        "ALERT_WEBHOOK_URL": hook.url,
    }
    portal.faults(fail_methods={"crm.lead.add": {**REFUSAL, "count": 1}})
    caplog.set_level(logging.INFO, logger="app.alerts")
    gateway = await make_gateway(portal, **settings)
    store = await gateway.store()
    refused = await submit(gateway, {"phone": "+1555000004"})
    await wait_for(lambda: _is(store, refused, Status.FAILED))
    await wait_for(lambda: _counted(gateway, ("email", "failed"), ("bitrix", "failed")))
    delivered = await submit(gateway, {"phone": "+1555000005"})
    await wait_for(lambda: _is(store, delivered, Status.DELIVERED))

    [body] = hook.bodies
    assert set(body) == {"text"} and refused in body["text"]  # no chat id set: Slack's shape
    assert notifications(portal) == []
    failures = {
        r.__dict__["channel"]: r.__dict__["error_code"]
        for r in caplog.records
        if r.getMessage() == "alerts.channel_failed"
    }
    assert failures == {"email": "SMTPConnectError", "bitrix": "insufficient_scope"}
    scope = next(r for r in caplog.records if r.__dict__.get("channel") == "bitrix")
    assert "im scope" in scope.__dict__["detail"]
    logged = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "smtp-password-42" not in logged and "secret-token" not in logged


async def test_the_emulator_records_system_notifications_and_shows_them(portal: Portal) -> None:
    async with httpx.AsyncClient(base_url=portal.webhook_url, timeout=10) as client:
        denied = await client.post("im.notify.system.add", json={"USER_ID": 1, "MESSAGE": "x"})
        portal.control("config", {"scopes": IM_SCOPES})
        sent = await client.post(
            "im.notify.system.add",
            json={
                "USER_ID": 7,
                "MESSAGE": "  Delivery <stalled>  ",
                "TAG": "B24FG",
                "SUB_TAG": "s",
            },
        )
        replaced = await client.post(
            "im.notify.system.add", json={"USER_ID": 7, "MESSAGE": "recovered", "TAG": "B24FG"}
        )
        no_user = await client.post("im.notify.system.add", json={"MESSAGE": "x"})
        no_text = await client.post("im.notify.system.add", json={"USER_ID": 1, "MESSAGE": " "})
        page = (await client.get(f"{portal.url}/")).text

    assert (denied.status_code, denied.json()["error"]) == (401, "insufficient_scope")
    assert sent.status_code == 200 and sent.json()["result"] == 1 and "time" in sent.json()
    assert replaced.json()["result"] == 2
    assert (no_user.status_code, no_user.json()) == (
        400,
        {"error": "USER_ID_EMPTY", "error_description": "User ID can't be empty"},
    )
    assert (no_text.status_code, no_text.json()["error"]) == (400, "MESSAGE_EMPTY")
    # A notification with a tag already in use replaces the user's earlier ones.
    [note] = notifications(portal)
    assert (note["ID"], note["USER_ID"], note["MESSAGE"], note["TAG"]) == (
        2,
        7,
        "recovered",
        "B24FG",
    )
    assert "Notifications (1)" in page and "recovered" in page
    portal.control("config", {"scopes": IM_SCOPES})
    async with httpx.AsyncClient(base_url=portal.webhook_url, timeout=10) as client:
        await client.post("im.notify.system.add", json={"USER_ID": 1, "MESSAGE": "<b>x</b>"})
        page = (await client.get(f"{portal.url}/")).text
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page


async def test_held_back_alerts_are_summarised_in_the_next_alert_an_hour_later(
    hook: Hook,
) -> None:
    now = [datetime(2026, 12, 1, 12, 0, tzinfo=UTC)]

    async def backlog(moment: datetime) -> Backlog:
        return Backlog(oldest_due=None, waiting=0, failed=3)

    metrics = Metrics()
    alerter = Alerter(
        [WebhookChannel(hook.url)],
        backlog=backlog,
        stall_after=timedelta(minutes=15),
        max_per_hour=1,
        metrics=metrics,
        clock=lambda: now[0],
    )
    alerter.failed([Failure("sub-a", "contact", "ACCESS_DENIED", 1)])
    alerter.failed([Failure("sub-a", "contact", "ACCESS_DENIED", 1)])  # the same: once
    alerter.failed([Failure("sub-b", "contact", "ACCESS_DENIED", 1)])
    await alerter.drain()
    now[0] += timedelta(minutes=61)
    alerter.failed([Failure("sub-c", "order", None, 4)])
    await alerter.drain()

    first, second = hook.texts()
    assert "sub-a" in first and "held back" not in first
    assert "sub-c (form order): unknown error after 4 attempt(s)" in second
    assert "1 earlier alert(s) since 2026-12-01 12:00:00 UTC were held back" in second
    sample = metrics.registry.get_sample_value
    assert sample("gateway_alerts_total", {"channel": "webhook", "result": "sent"}) == 2
    assert sample("gateway_alerts_total", {"channel": "webhook", "result": "suppressed"}) == 1


def test_alert_settings_are_checked_and_never_echo_the_webhook_url() -> None:
    base: dict[str, Any] = {"_env_file": None}
    settings = Settings.load(**base, ALERT_BITRIX_USER_IDS="1, 7", ALERT_SMTP_TO=None)
    assert settings.ALERT_BITRIX_USER_IDS == (1, 7)
    assert (settings.ALERT_SMTP_PORT, settings.ALERT_SMTP_STARTTLS) == (587, True)
    assert (settings.ALERT_STALL_MINUTES, settings.ALERT_MAX_PER_HOUR) == (15.0, 20)
    with pytest.raises(SettingsError, match="ALERT_BITRIX_USER_IDS"):
        Settings.load(**base, ALERT_BITRIX_USER_IDS="1,admin")
    with pytest.raises(SettingsError, match="ALERT_SMTP_FROM and ALERT_SMTP_TO are required"):
        Settings.load(**base, ALERT_SMTP_HOST="smtp.example.org")
    with pytest.raises(SettingsError, match="ALERT_WEBHOOK_URL") as refused:
        Settings.load(**base, ALERT_WEBHOOK_URL="http://chat.example.org/hook/tok-123")
    assert "tok-123" not in str(refused.value)


async def _is(store: Store, submission_id: str, status: Status) -> bool:
    return await status_of(store, submission_id) is status


async def _counted(gateway: Gateway, *keys: tuple[str, str]) -> bool:
    counts = await alert_counts(gateway)
    return all(counts.get(key, 0) >= 1 for key in keys)


async def _all_counted(gateway: Gateway, result: str) -> bool:
    return await _counted(gateway, *((c, result) for c in ("bitrix", "email", "webhook")))


async def test_in_sandbox_mode_failures_are_notified_to_the_built_in_portal_and_shown(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(None, ALERT_BITRIX_USER_IDS="1")
    async with gateway.client() as client:
        await client.post(
            "/sandbox/_control/faults", json={"fail_methods": {"crm.lead.add": REFUSAL}}
        )
        submission_id = await submit(gateway, {"phone": "+1555000006"})

        async def notes() -> list[dict[str, Any]]:
            state = (await client.get("/sandbox/_control/state")).json()
            return list(state["notifications"])

        [note] = await wait_for(notes)
        page = (await client.get("/sandbox/")).text
    assert note["USER_ID"] == 1 and submission_id in note["MESSAGE"]
    assert "Notifications (1)" in page and submission_id in page
