"""The admin API and the `submissions` CLI: a failed submission is visible with its error, and a
retry by hand after the fix delivers it exactly once. The gateway and the emulator run as real
servers; the emulator's `required_fields` plays the portal admin who makes a field required."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.admin.service import mask_secrets
from app.main import cli
from app.store import Status, Store
from tests.cli import clean_env
from tests.cli import run_cli as shared_run_cli
from tests.conftest import Gateway, Portal, wait_for

MakeGateway = Callable[..., Awaitable[Gateway]]
TOKEN = "admin-token-for-tests-7f3a-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
FORMS = """
[forms.contact]
entity = "lead"
[forms.contact.fields]
city = "UF_CRM_CITY"

[forms.callback]
entity = "lead"
"""


@contextmanager
def required_fields(portal: Portal, fields: dict[str, list[str]]) -> Iterator[None]:
    """The portal's admin makes fields required; the config outlives the portal's reset."""
    portal.control("config", {"required_fields": fields})
    try:
        yield
    finally:
        portal.control("config", {"required_fields": {}})


async def admin_gateway(
    make_gateway: MakeGateway, portal: Portal, tmp_path: Path, **overrides: Any
) -> Gateway:
    forms = tmp_path / "forms.toml"
    forms.write_text(FORMS)
    return await make_gateway(portal, ADMIN_TOKEN=TOKEN, FORMS_FILE=forms, **overrides)


async def post(gateway: Gateway, form: str, **fields: str) -> str:
    async with gateway.client() as client:
        response = await client.post(f"/forms/{form}", data=fields)
    assert response.status_code == 202, response.text
    submission_id: str = response.json()["id"]
    return submission_id


async def settled(store: Store, ids: list[str]) -> bool:
    """Every submission delivered or failed."""
    for submission_id in ids:
        row = await store.get(submission_id)
        if row is None or row.status not in (Status.DELIVERED, Status.FAILED):
            return False
    return True


async def status_of(store: Store, submission_id: str) -> Status | None:
    row = await store.get(submission_id)
    return row.status if row else None


async def admin(gateway: Gateway, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with gateway.client() as client:
        return await client.request(method, path, headers=AUTH, **kwargs)


def origin_counts(portal: Portal) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in portal.records("lead"):
        counts[record["ORIGIN_ID"]] = counts.get(record["ORIGIN_ID"], 0) + 1
    return counts


class Mixed:
    """Five submissions, oldest first: with a message they are delivered, without one the portal
    (which requires COMMENTS) refuses them. `middle` lies between the second and the third."""

    def __init__(self, ids: list[str], middle: datetime) -> None:
        self.ids = ids
        self.middle = middle
        a, b, c, d, e = ids
        self.delivered = [a, c, e]
        self.failed = [b, d]


async def mixed_outcomes(gateway: Gateway) -> Mixed:
    ids = [
        await post(gateway, "contact", phone="+15550100001", message="call me"),
        await post(gateway, "contact", phone="+15550100002"),
    ]
    middle = datetime.now(UTC)
    ids += [
        await post(gateway, "callback", phone="+15550100003", message="evenings"),
        await post(gateway, "callback", phone="+15550100004"),
        await post(gateway, "contact", phone="+15550100005", message="hi"),
    ]
    store = await gateway.store()
    await wait_for(lambda: settled(store, ids))
    return Mixed(ids, middle)


def item_ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


# --------------------------------------------------------------------------- access


async def test_without_admin_token_every_admin_path_is_404(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal)
    async with gateway.client() as client:
        for method, path in [
            ("GET", "/admin/submissions"),
            ("GET", "/admin/submissions/some-id"),
            ("POST", "/admin/submissions/retry-failed"),
            ("POST", "/admin/submissions/some-id/retry"),
        ]:
            response = await client.request(method, path, headers=AUTH)
            assert response.status_code == 404, path


async def test_a_missing_or_wrong_token_is_401_and_never_echoed(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await admin_gateway(make_gateway, portal, tmp_path)
    async with gateway.client() as client:
        for headers in [
            {},
            {"Authorization": "Bearer wrong-token"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
        ]:
            for method, path in [
                ("GET", "/admin/submissions"),
                ("POST", "/admin/submissions/retry-failed"),
            ]:
                response = await client.request(method, path, headers=headers)
                assert response.status_code == 401
                assert response.headers["www-authenticate"] == "Bearer"
                assert "error" in response.json()
                assert TOKEN not in response.text
        ok = await client.get("/admin/submissions", headers={"Authorization": f"bearer {TOKEN}"})
        assert ok.status_code == 200
        assert ok.json() == {"items": [], "total": 0, "limit": 50, "offset": 0}


# --------------------------------------------------------------------------- list


async def test_list_filters_by_status_form_and_dates_and_pages_newest_first(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await admin_gateway(make_gateway, portal, tmp_path)
    with required_fields(portal, {"lead": ["COMMENTS"]}):
        mixed = await mixed_outcomes(gateway)
    a, b, c, d, e = mixed.ids
    listing = await admin(gateway, "GET", "/admin/submissions")
    assert item_ids(listing) == [e, d, c, b, a]
    assert listing.json()["total"] == 5
    first = listing.json()["items"][-1]
    assert first["status"] == "delivered" and first["form_id"] == "contact"
    assert first["attempts"] == 1 and first["next_attempt_at"] is None
    assert "+15550100001" not in listing.text  # a list item carries no personal data

    async def ids(**params: Any) -> list[str]:
        return item_ids(await admin(gateway, "GET", "/admin/submissions", params=params))

    assert await ids(status="failed") == [d, b]
    assert await ids(status="delivered") == [e, c, a]
    assert await ids(status="failed", form="callback") == [d]
    assert await ids(form="contact") == [e, b, a]
    assert await ids(since=mixed.middle.isoformat()) == [e, d, c]
    assert await ids(until=mixed.middle.isoformat()) == [b, a]
    naive_utc = mixed.middle.replace(tzinfo=None).isoformat()
    assert await ids(since=naive_utc) == [e, d, c]
    plus_two = mixed.middle.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert await ids(until=plus_two) == [b, a]
    assert await ids(since=(mixed.middle + timedelta(days=1)).date().isoformat()) == []

    page = await admin(gateway, "GET", "/admin/submissions", params={"limit": 2, "offset": 2})
    assert item_ids(page) == [c, b]
    assert page.json() | {"items": None} == {"items": None, "total": 5, "limit": 2, "offset": 2}
    assert await ids(limit=2) == [e, d]
    assert await ids(limit=2, offset=4) == [a]

    for params, name in [
        ({"status": "lost"}, "status"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"offset": -1}, "offset"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2024-13-01"}, "until"),
    ]:
        bad = await admin(gateway, "GET", "/admin/submissions", params=params)
        assert bad.status_code == 422, params
        assert name in bad.json()["error"]


# --------------------------------------------------------------------------- show, dry run


async def test_show_gives_attempts_errors_and_the_commands_still_to_send(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await admin_gateway(make_gateway, portal, tmp_path)
    with required_fields(portal, {"lead": ["COMMENTS"]}):
        mixed = await mixed_outcomes(gateway)

    delivered = (await admin(gateway, "GET", f"/admin/submissions/{mixed.ids[0]}")).json()
    [lead] = [r for r in portal.records("lead") if r["ORIGIN_ID"] == mixed.ids[0]]
    assert delivered["status"] == "delivered"
    assert delivered["bitrix_ids"] == {"lead": lead["ID"]}
    assert delivered["fields"] == {"phone": ["+15550100001"], "message": ["call me"]}
    assert delivered["crm"]["records"]["lead"]["COMMENTS"] == "call me"
    assert delivered["commands"] == []  # nothing is left to send
    [attempt] = delivered["delivery_attempts"]
    assert attempt["outcome"] == "delivered" and attempt["error_code"] is None
    assert delivered["delivered_at"] is not None and delivered["last_error"] is None

    failed = (await admin(gateway, "GET", f"/admin/submissions/{mixed.ids[1]}")).json()
    assert failed["status"] == "failed" and failed["next_attempt_at"] is None
    assert failed["last_error_code"] == "RejectedError"
    assert 'The field "COMMENTS" is required' in failed["last_error"]
    [attempt] = failed["delivery_attempts"]
    assert attempt["outcome"] == "failed" and attempt["error_code"] == "RejectedError"
    assert "COMMENTS" in attempt["excerpt"] and "is required" in attempt["excerpt"]
    [command] = failed["commands"]
    assert command["phase"] == "create"
    assert command["command"].startswith("crm.lead.add?")
    assert mixed.ids[1] in command["command"]  # ORIGIN_ID
    assert failed["bitrix_ids"] == {} and failed["outcome_unknown"] is False
    assert TOKEN not in json.dumps(failed) and portal.webhook_url not in json.dumps(failed)

    for method, path in [
        ("GET", "/admin/submissions/no-such-id"),
        ("GET", "/admin/submissions/no-such-id/dry-run"),
        ("POST", "/admin/submissions/no-such-id/retry"),
    ]:
        missing = await admin(gateway, method, path)
        assert missing.status_code == 404 and "error" in missing.json()


async def test_a_dry_run_lists_the_commands_and_sends_nothing(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await admin_gateway(make_gateway, portal, tmp_path)
    with required_fields(portal, {"lead": ["COMMENTS"]}):
        mixed = await mixed_outcomes(gateway)
    failed_id = mixed.failed[0]
    before = len(portal.state()["requests"])
    dry = await admin(gateway, "GET", f"/admin/submissions/{failed_id}/dry-run")
    assert dry.status_code == 200
    shown = (await admin(gateway, "GET", f"/admin/submissions/{failed_id}")).json()
    assert dry.json() == {"id": failed_id, "status": "failed", "commands": shown["commands"]}
    assert [c["key"] for c in dry.json()["commands"]] == ["lead"]
    await asyncio.sleep(0.2)  # several worker polls
    assert len(portal.state()["requests"]) == before
    delivered = await admin(gateway, "GET", f"/admin/submissions/{mixed.delivered[0]}/dry-run")
    assert delivered.json()["commands"] == []


def test_a_webhook_path_echoed_in_an_error_text_is_masked() -> None:
    page = "<p>The requested URL /rest/12/k3y-s3cr3t/batch was not found</p>"
    assert mask_secrets(page) == "<p>The requested URL /rest/12/***/batch was not found</p>"
    assert mask_secrets('{"error": "", "error_description": "Not found"}') == (
        '{"error": "", "error_description": "Not found"}'
    )


# --------------------------------------------------------------------------- retry


async def test_a_rejected_field_fails_visibly_and_a_retry_after_the_fix_delivers_one_lead(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    portal.control("config", {"user_fields": {"lead": ["UF_CRM_CITY"]}})
    # A long poll: the delivery after the retry proves that the retry wakes the worker.
    gateway = await admin_gateway(make_gateway, portal, tmp_path, WORKER_POLL_SECONDS=30)
    store = await gateway.store()
    try:
        with required_fields(portal, {"lead": ["UF_CRM_CITY"]}):
            submission_id = await post(gateway, "contact", phone="+15550100009")
            await wait_for(lambda: settled(store, [submission_id]))
            shown = (await admin(gateway, "GET", f"/admin/submissions/{submission_id}")).json()
            assert shown["status"] == "failed"
            assert shown["last_error_code"] == "RejectedError"
            assert 'The field "UF_CRM_CITY" is required' in shown["last_error"]
            [attempt] = shown["delivery_attempts"]
            assert attempt["error_code"] == "RejectedError"
            assert "UF_CRM_CITY" in attempt["excerpt"]
            assert portal.records("lead") == []
            failed = await admin(gateway, "GET", "/admin/submissions", params={"status": "failed"})
            assert item_ids(failed) == [submission_id]

        # The fix: the portal's admin no longer requires the field.
        retried = await admin(gateway, "POST", f"/admin/submissions/{submission_id}/retry")
        assert retried.status_code == 200
        assert retried.json() == {"id": submission_id, "status": "delivering"}
        await wait_for(lambda: settled(store, [submission_id]), within=10)

        shown = (await admin(gateway, "GET", f"/admin/submissions/{submission_id}")).json()
        assert shown["status"] == "delivered"
        assert [a["outcome"] for a in shown["delivery_attempts"]] == ["failed", "delivered"]
        assert origin_counts(portal) == {submission_id: 1}
        assert shown["bitrix_ids"] == {"lead": portal.records("lead")[0]["ID"]}

        again = await admin(gateway, "POST", f"/admin/submissions/{submission_id}/retry")
        assert again.status_code == 409 and "delivered" in again.json()["error"]
    finally:
        portal.control("config", {"user_fields": {}})


async def test_retry_failed_requeues_every_failed_submission(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await admin_gateway(make_gateway, portal, tmp_path)
    with required_fields(portal, {"lead": ["COMMENTS"]}):
        mixed = await mixed_outcomes(gateway)
    retried = await admin(gateway, "POST", "/admin/submissions/retry-failed")
    assert retried.status_code == 200 and retried.json() == {"requeued": 2}
    store = await gateway.store()

    async def all_delivered() -> bool:
        return all([await status_of(store, i) is Status.DELIVERED for i in mixed.ids])

    await wait_for(all_delivered)
    assert origin_counts(portal) == {i: 1 for i in mixed.ids}
    again = await admin(gateway, "POST", "/admin/submissions/retry-failed")
    assert again.json() == {"requeued": 0}


# --------------------------------------------------------------------------- the CLI


def run_cli(args: list[str], *, database_url: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return shared_run_cli(args, cwd, clean_env(DATABASE_URL=database_url))


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[str], None]:
    """In-process `cli()`: only DATABASE_URL set, no .env from the working directory."""
    for name in ("B24_WEBHOOK_URL", "FORMS_FILE", "ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    workdir = tmp_path / "cli"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return lambda url: monkeypatch.setenv("DATABASE_URL", url)


async def test_the_cli_lists_shows_and_retries_on_the_same_database(
    portal: Portal,
    make_gateway: MakeGateway,
    tmp_path: Path,
    cli_env: Callable[[str], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    gateway = await admin_gateway(make_gateway, portal, tmp_path)
    store = await gateway.store()
    with required_fields(portal, {"lead": ["COMMENTS"]}):
        mixed = await mixed_outcomes(gateway)
    b, d = mixed.failed

    cli_env(gateway.db_url)

    async def run(*args: str) -> tuple[int, str, str]:
        """`cli()` in-process (a thread: it runs its own event loop), stdout and stderr."""
        capsys.readouterr()
        code = await asyncio.to_thread(cli, list(args))
        out, err = capsys.readouterr()
        return code, out, err

    code, out, _ = await run("submissions", "list", "--status", "failed")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["ID", "FORM", "STATUS", "ATTEMPTS"]
    assert [line.split()[0] for line in lines[1:3]] == [d, b]
    assert lines[1].split()[1:4] == ["callback", "failed", "1"]
    assert lines[1].split()[-1] == "RejectedError"
    assert lines[-1] == "1-2 of 2"

    code, out, _ = await run("submissions", "show", b)
    assert code == 0
    over_http = (await admin(gateway, "GET", f"/admin/submissions/{b}")).json()
    assert json.loads(out) == over_http  # one serialisation for both

    # The installed command, in its own process, beside the running gateway.
    retried = run_cli(["submissions", "retry", b], database_url=gateway.db_url, cwd=tmp_path)
    assert retried.returncode == 0, retried.stderr
    assert f"requeued {b}" in retried.stdout and "next poll" in retried.stdout
    await wait_for(lambda: settled(store, [b]))
    assert await status_of(store, b) is Status.DELIVERED

    code, _, err = await run("submissions", "retry", b)
    assert code == 1 and "delivered" in err and "only a failed one" in err
    code, _, err = await run("submissions", "retry", "no-such-id")
    assert code == 1 and "no submission no-such-id" in err
    code, _, err = await run("submissions", "show", "no-such-id")
    assert code == 1 and "no submission" in err
    code, out, _ = await run("submissions", "retry", "--failed")
    assert code == 0 and "requeued 1 failed submission" in out
    await wait_for(lambda: settled(store, [d]))
    assert origin_counts(portal) == {i: 1 for i in mixed.ids}
    code, out, _ = await run("submissions", "list", "--form", "callback", "--limit", "1")
    assert code == 0 and out.splitlines()[-1] == "1-1 of 2"


def test_the_cli_without_a_usable_database_exits_2(
    tmp_path: Path, cli_env: Callable[[str], None], capsys: pytest.CaptureFixture[str]
) -> None:
    cli_env(f"sqlite+aiosqlite:///{tmp_path / 'nowhere' / 'gateway.db'}")
    assert cli(["submissions", "list"]) == 2
    assert "no database at" in capsys.readouterr().err
    cli_env("mysql://user:hunter2@db/gateway")
    assert cli(["submissions", "list"]) == 2
    err = capsys.readouterr().err
    assert "DATABASE_URL" in err and "hunter2" not in err
    empty = tmp_path / "empty.db"
    empty.touch()
    cli_env(f"sqlite+aiosqlite:///{empty}")
    assert cli(["submissions", "show", "x"]) == 2
    err = capsys.readouterr().err
    assert "cannot use the SQLite database" in err and "b24-form-gateway migrate" in err
