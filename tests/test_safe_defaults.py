"""Safe by default on the open internet: sandbox mode only on loopback (or asked for), the
sandbox answering its own origin only, a hardened admin API, and the security headers of every
page. The gateway and the emulator run as real servers (or as the installed command)."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.main import cli, standalone_emulator
from app.settings import Settings, SettingsError
from tests.conftest import PORTAL_SECRET, Gateway, Portal, wait_for
from tests.servers import RunningServer, running
from tests.test_dockerfile import DOCKERFILE, env_of, final_stage, parse_dockerfile

MakeGateway = Callable[..., Awaitable[Gateway]]
TOKEN = "safe-defaults-admin-token-0123456789abcdef"
EVIL = "https://evil.example"
WEBHOOK = "https://portal.bitrix24.example/rest/1/abc123/"


def cors_headers(response: httpx.Response) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-")]


# --------------------------------------------------------------------------- sandbox mode


def test_settings_refuse_sandbox_mode_on_a_public_address_without_a_webhook() -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.load(HOST="0.0.0.0", _env_file=None)
    reason = str(refused.value)
    assert "\n" not in reason
    for needed in ("sandbox mode refused", "HOST=0.0.0.0", "B24_WEBHOOK_URL", "SANDBOX=true"):
        assert needed in reason
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "::1"):
        assert Settings.load(HOST=host, _env_file=None).sandbox_local_only
    explicit = Settings.load(HOST="0.0.0.0", SANDBOX=True, _env_file=None)
    assert explicit.sandbox and not explicit.sandbox_local_only
    assert not Settings.load(HOST="0.0.0.0", B24_WEBHOOK_URL=WEBHOOK, _env_file=None).sandbox
    with pytest.raises(SettingsError, match="SANDBOX=true and B24_WEBHOOK_URL"):
        Settings.load(SANDBOX=True, B24_WEBHOOK_URL=WEBHOOK, _env_file=None)


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., None]:
    """In-process `cli()`: no setting from this process's environment or a .env file; the
    test sets its own."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_serve_check_and_worker_refuse_a_public_sandbox_in_one_line_with_exit_2(
    tmp_path: Path, environment: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    database = tmp_path / "gateway.db"
    environment(DATABASE_URL=f"sqlite+aiosqlite:///{database}", HOST="0.0.0.0")
    # `serve` last: were it not refused, it would start serving.
    for command in ("check", "worker", "serve"):
        assert cli([command]) == 2, command
    environment(HOST="127.0.0.1")
    assert cli(["serve", "--host", "0.0.0.0"]) == 2
    for line in capsys.readouterr().err.splitlines():
        assert line.startswith("b24-form-gateway: invalid setting: sandbox mode refused"), line
        assert "B24_WEBHOOK_URL" in line and "HOST=127.0.0.1" in line and "SANDBOX=true" in line
    assert not database.exists()  # refused before anything was opened


async def test_the_image_without_a_webhook_refuses_to_start_and_serves_the_sandbox_when_asked(
    make_gateway: MakeGateway,
    environment: Callable[..., None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    image_env = env_of(final_stage(parse_dockerfile(DOCKERFILE.read_text())))
    assert image_env["HOST"] == "0.0.0.0"
    environment(**image_env)
    with pytest.raises(SettingsError):
        Settings.load()
    assert await asyncio.to_thread(cli, ["serve"]) == 2
    assert "SANDBOX=true" in capsys.readouterr().err

    gateway = await make_gateway(None, HOST=image_env["HOST"], SANDBOX=True)
    port = gateway.url.rsplit(":", 1)[1]
    async with gateway.client() as client:
        assert (await client.get("/readyz")).json()["sandbox"] is True
        # Asked for: the sandbox answers a request naming this host by another name, too.
        viewer = await client.get("/sandbox/", headers={"Host": f"gateway.example:{port}"})
    assert viewer.status_code == 200 and "Bitrix24 sandbox" in viewer.text


def test_check_warns_that_a_sandbox_opened_on_purpose_is_open_to_the_network(
    environment: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    environment(HOST="0.0.0.0", SANDBOX="true")
    assert cli(["check"]) == 0
    [warning] = [line for line in capsys.readouterr().out.splitlines() if "sandbox:" in line]
    assert warning.startswith("[warn]") and "HOST=0.0.0.0" in warning and "/sandbox" in warning


# --------------------------------------------------------------------------- the sandbox's origin

SANDBOX_PATHS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("GET", "/sandbox/", None),
    ("GET", "/sandbox/records.json", None),
    ("GET", "/sandbox/_control/state", None),
    ("POST", "/sandbox/_control/reset", {}),
    ("POST", "/sandbox/_control/faults", {"outage": True}),
    ("POST", "/sandbox/_control/config", {"user_fields": {"lead": ["UF_CRM_X"]}}),
    ("POST", "/sandbox/_control/bucket", {"full": True}),
    ("POST", "/sandbox/rest/1/sandbox/crm.lead.list", {}),
    ("POST", "/sandbox/rest/1/sandbox/profile", {}),
]
FOREIGN = [
    {"Origin": EVIL},
    {"Origin": "null"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site", "Origin": "https://other.127.0.0.1.example"},
]


async def test_the_sandbox_refuses_other_origins_with_403_and_no_cors_headers(
    make_gateway: MakeGateway,
) -> None:
    gateway = await make_gateway(None)
    async with gateway.client() as client:
        accepted = await client.post("/forms/contact", data={"phone": "+15550001234"})

        async def delivered() -> list[dict[str, Any]]:
            state = (await client.get("/sandbox/_control/state")).json()
            return list(state["records"]["lead"])

        [lead] = await wait_for(delivered)
        assert lead["ORIGIN_ID"] == accepted.json()["id"]
        for method, path, body in SANDBOX_PATHS:
            for headers in FOREIGN:
                refused = await client.request(method, path, json=body, headers=headers)
                assert refused.status_code == 403, (method, path, headers)
                assert cors_headers(refused) == [], (path, headers)
            preflight = await client.options(
                path, headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
            )
            assert preflight.status_code == 403 and cors_headers(preflight) == []
        # Nothing a refused request asked for happened.
        state = (await client.get("/sandbox/_control/state")).json()
        assert [r["ORIGIN_ID"] for r in state["records"]["lead"]] == [lead["ORIGIN_ID"]]
        assert (await client.get("/sandbox/_control/faults")).json()["outage"] is False

        # Its own pages may still call it, and get no CORS headers either.
        own = {"Origin": gateway.url, "Sec-Fetch-Site": "same-origin"}
        same = await client.post("/sandbox/rest/1/sandbox/crm.lead.list", json={}, headers=own)
        assert same.status_code == 200 and same.json()["total"] == 1
        assert cors_headers(same) == []

        # A web page that rebinds its own name to 127.0.0.1 is same-origin to the browser.
        port = gateway.url.rsplit(":", 1)[1]
        rebound = await client.get(
            "/sandbox/_control/state",
            headers={"Host": f"rebound.example:{port}", "Origin": f"http://rebound.example:{port}"},
        )
        assert rebound.status_code == 403 and "this machine" in rebound.json()["error"]

        # The gateway's own form routes still answer CORS for allowed origins (here: any).
        form = await client.post(
            "/forms/contact", data={"phone": "+15550001235"}, headers={"Origin": EVIL}
        )
        assert form.status_code == 202
        assert form.headers["access-control-allow-origin"] == EVIL
        preflight = await client.options(
            "/forms/contact", headers={"Origin": EVIL, "Access-Control-Request-Method": "POST"}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == EVIL


def test_the_standalone_emulator_refuses_other_origins_and_sends_the_headers() -> None:
    app = standalone_emulator(host="127.0.0.1", secret="sandbox")
    with running(app) as server, httpx.Client(base_url=server.url) as http:
        for method, path, body in [
            ("POST", "/_control/reset", {}),
            ("POST", "/_control/faults", {"outage": True}),
            ("POST", "/rest/1/sandbox/crm.lead.add", {"fields": {"TITLE": "x"}}),
            ("GET", "/", None),
        ]:
            for headers in FOREIGN:
                refused = http.request(method, path, json=body, headers=headers)
                assert refused.status_code == 403, (path, headers)
                assert cors_headers(refused) == []
        added = http.post("/rest/1/sandbox/crm.lead.add", json={"fields": {"TITLE": "x"}})
        assert added.status_code == 200 and added.json()["result"] == 1
        viewer = http.get("/")
    assert_page_headers(viewer)
    assert viewer.headers["cache-control"] == "no-store"


# --------------------------------------------------------------------------- admin


def test_a_short_admin_token_is_refused_saying_how_to_make_one(
    environment: Callable[..., None], capsys: pytest.CaptureFixture[str]
) -> None:
    short = "hunter2-hunter2-hunter2-hunter2"  # 31 characters
    with pytest.raises(SettingsError) as refused:
        Settings.load(ADMIN_TOKEN=short, _env_file=None)
    reason = str(refused.value)
    assert "ADMIN_TOKEN" in reason and "32 characters" in reason
    assert "secrets.token_urlsafe(32)" in reason and short not in reason
    assert Settings.load(ADMIN_TOKEN=short + "2", _env_file=None).ADMIN_TOKEN is not None

    environment(ADMIN_TOKEN="a")
    assert cli(["serve"]) == 2
    err = capsys.readouterr().err
    assert "ADMIN_TOKEN" in err and "token_urlsafe" in err


def client_from(address: str, token: str | None = None) -> dict[str, str]:
    headers = {"X-Forwarded-For": address}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return headers


async def test_wrong_admin_tokens_are_throttled_per_client(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    # The test's requests come through "a proxy" on loopback that names each client.
    gateway = await make_gateway(portal, ADMIN_TOKEN=TOKEN, TRUSTED_PROXIES="127.0.0.1")
    attacker, admin, browser = "203.0.113.7", "198.51.100.9", "192.0.2.33"
    async with gateway.client() as client:
        for i in range(10):
            wrong = await client.get(
                "/admin/submissions", headers=client_from(attacker, f"{TOKEN[:-2]}{i:02d}")
            )
            assert wrong.status_code == 401, i
        throttled = await client.get("/admin/submissions", headers=client_from(attacker, "x"))
        assert throttled.status_code == 429
        assert 1 <= int(throttled.headers["retry-after"]) <= 600
        assert throttled.headers["cache-control"] == "no-store"
        # Not even the right token from that client: a right guess looks like a wrong one.
        right = await client.get("/admin/submissions", headers=client_from(attacker, TOKEN))
        assert right.status_code == 429
        basic = base64.b64encode(f"admin:{TOKEN}".encode()).decode()
        page = await client.get(
            "/admin/dashboard",
            headers={**client_from(attacker), "Authorization": f"Basic {basic}"},
        )
        assert page.status_code == 429

        ok = await client.get("/admin/submissions", headers=client_from(admin, TOKEN))
        assert ok.status_code == 200 and ok.json()["total"] == 0

        # Visits without credentials (a browser before its password prompt) are not guesses.
        for _ in range(12):
            prompt = await client.get("/admin/dashboard", headers=client_from(browser))
            assert prompt.status_code == 401
        page = await client.get(
            "/admin/dashboard",
            headers={**client_from(browser), "Authorization": f"Basic {basic}"},
        )
        assert page.status_code == 200


async def test_the_openapi_document_lists_no_admin_route(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal, ADMIN_TOKEN=TOKEN)
    async with gateway.client() as client:
        paths = (await client.get("/openapi.json")).json()["paths"]
        auth = {"Authorization": f"Bearer {TOKEN}"}
        listed = await client.get("/admin/submissions", headers=auth)
    assert "/forms/{form_id}" in paths
    assert [p for p in paths if p.startswith("/admin")] == []
    assert listed.status_code == 200  # out of the document, still served


async def test_public_answers_never_name_the_portal(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    renamed = RunningServer(portal.server.app)  # the same portal under a new address
    renamed.start()
    try:
        portal.faults(moved_to=renamed.url)
        gateway = await make_gateway(portal)
        async with gateway.client() as client:
            await client.post("/forms/contact", data={"phone": "+15550001236"})
            await wait_for(lambda: portal.records("lead"))

            async def moved() -> dict[str, Any]:
                ready: dict[str, Any] = (await client.get("/readyz")).json()
                return ready if ready["portal"]["moved"] else {}

            await wait_for(moved)
            answers = [
                (await client.get(path)).text
                for path in ("/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/embed.js")
            ]
    finally:
        renamed.stop()
    hosts = ("127.0.0.1", f":{portal.server.port}", f":{renamed.port}", PORTAL_SECRET)
    for text in answers:
        for host in hosts:
            assert host not in text


# --------------------------------------------------------------------------- headers


def assert_page_headers(response: httpx.Response) -> None:
    assert response.headers["content-type"].startswith("text/html"), response.request.url
    policy = {
        directive.split()[0]: directive.split()[1:]
        for directive in response.headers["content-security-policy"].split(";")
        if directive.strip()
    }
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # no inline script, no eval
    assert policy["default-src"] == ["'none'"]
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] in ("same-origin", "no-referrer")
    # The policy allows no inline script: the page has none.
    assert not re.search(r"<script(?![^>]*\bsrc=)", response.text), response.request.url


async def test_every_html_page_sends_the_security_headers_and_admin_answers_are_not_stored(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    sandbox = await make_gateway(None)
    async with sandbox.client() as client:
        pages = [await client.get(path) for path in ("/", "/status", "/sandbox/")]
        script = await client.get("/demo-tracker.js")
        sandbox_state = await client.get("/sandbox/_control/state")
    production = await make_gateway(portal, ADMIN_TOKEN=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with production.client() as client:
        pages.append(await client.get("/"))
        pages.append(await client.get("/admin/dashboard", headers=auth))
        pages.append(
            await client.post(
                "/forms/contact", data={"phone": "+15550001237"}, headers={"Accept": "text/html"}
            )
        )
        admin = [
            await client.get("/admin/submissions", headers=auth),
            await client.get("/admin/submissions/no-such-id", headers=auth),
            await client.get("/admin/submissions"),
            await client.get("/admin/dashboard"),
            pages[-2],
        ]
        health = await client.get("/healthz")
    assert "Thank you" in pages[-1].text
    for page in pages:
        assert page.status_code == 200, page.request.url
        assert_page_headers(page)
    assert [a.status_code for a in admin] == [200, 404, 401, 401, 200]
    for answer in admin:
        assert answer.headers["cache-control"] == "no-store", answer.request.url
    assert sandbox_state.headers["cache-control"] == "no-store"  # the sandbox's leads too
    assert health.headers["x-content-type-options"] == "nosniff"
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["x-content-type-options"] == "nosniff"
