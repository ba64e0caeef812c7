"""The front door on the open internet: hostile requests, origins and CORS per form, the rate
limit with and without a trusted proxy, spam signals (honeypot, fill time, captcha against a
fake verifier served over real HTTP), redirects, concurrent duplicates, retention, and logs
that hold no secret and no personal data. The gateway and the emulator run as real servers."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from app.forms import FormsError
from app.intake.captcha import TOKEN_FIELDS
from app.main import cli, create_app
from app.retention import erase_expired
from app.store import NewSubmission, Status, Store, create_engine, migrate
from app.store.submissions import AttemptRecord, Outcome
from tests.conftest import Gateway, Portal, gateway_settings, wait_for
from tests.servers import RunningServer, free_port, running
from tests.test_cli import clean_env, console_script, process, wait_healthy

MakeGateway = Callable[..., Awaitable[Gateway]]
CAPTCHA_SECRET = "captcha-secret-for-tests-5c1e"
SHOP = "https://shop.example"
PARTNER = "https://partner.example"
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}


# --------------------------------------------------------------------------- fake verifier


@dataclass
class FakeVerifier:
    """A captcha provider's verify endpoint, served for real on loopback, for all four formats.

    Tokens: `pass…` passes once (a second use fails, as with real providers), solved on
    `shop.example` unless the token names a host after `@`, and for the action named after `#`
    (none by default); `fail…` fails; `down` answers 502, `unavailable` 503; `internal` is the
    provider's own `internal-error`; `refuse` answers 400; `slow` answers after 2 s; `garbage`
    answers HTML. A wrong secret gets each provider's "bad secret" answer. Every request is
    recorded.
    """

    server: RunningServer
    requests: list[dict[str, str]] = field(default_factory=list)
    used: set[str] = field(default_factory=set)

    def url(self, provider: str) -> str:
        return f"{self.server.url}/{provider}"

    def tokens(self) -> list[str]:
        return [r.get("response") or r.get("token", "") for r in self.requests]


def fake_verifier_app(fake: FakeVerifier) -> Starlette:
    async def verify(request: Request) -> Response:
        provider = request.path_params["provider"]
        form = {k: str(v) for k, v in (await request.form()).items()}
        fake.requests.append({"provider": provider, **form})
        token = form.get("token" if provider == "yandex" else "response", "")
        if token == "down":
            return PlainTextResponse("bad gateway", status_code=502)
        if token == "unavailable":
            return PlainTextResponse("service unavailable", status_code=503)
        if token == "refuse":
            return JSONResponse({"success": False, "error-codes": ["bad-request"]}, 400)
        if token == "internal":
            return JSONResponse({"success": False, "error-codes": ["internal-error"]})
        if token == "slow":
            await asyncio.sleep(2)
        if token == "garbage":
            return PlainTextResponse("<html>maintenance</html>")
        secret_ok = form.get("secret") == CAPTCHA_SECRET
        passed = secret_ok and token.startswith("pass") and token not in fake.used
        if passed:
            fake.used.add(token)
        rest, _, action = token.partition("#")
        host = rest.partition("@")[2] or "shop.example"
        if provider == "yandex":
            if not secret_ok:
                return JSONResponse({"status": "failed", "message": "Authentication failed"}, 403)
            status = "ok" if passed else "failed"
            return JSONResponse({"status": status, "message": "", "host": host})
        codes = [] if passed else ["invalid-input-response"]
        if not secret_ok:
            codes = ["invalid-input-secret"]
        answer: dict[str, Any] = {"success": passed, "error-codes": codes}
        if passed:
            answer["hostname"] = host
            if provider in ("turnstile", "recaptcha"):
                answer["action"] = action
        if provider == "recaptcha" and passed:
            answer["score"] = 0.1 if "lowscore" in token else 0.9
        return JSONResponse(answer)

    return Starlette(routes=[Route("/{provider}", verify, methods=["POST"])])


@pytest.fixture(scope="module")
def _verifier_server() -> Iterator[FakeVerifier]:
    fake = FakeVerifier(server=RunningServer(Starlette()))
    fake.server = RunningServer(fake_verifier_app(fake))
    fake.server.start()
    yield fake
    fake.server.stop()


@pytest.fixture
def verifier(_verifier_server: FakeVerifier) -> FakeVerifier:
    _verifier_server.requests.clear()
    _verifier_server.used.clear()
    return _verifier_server


# --------------------------------------------------------------------------- helpers


def forms_file(tmp_path: Path, text: str, name: str = "forms.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def db(tmp_path: Path, name: str) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


def from_address(gateway: Gateway, address: str) -> httpx.AsyncClient:
    """A client whose connections come from `address` (any 127.0.0.0/8 address is loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=gateway.url, timeout=15, transport=transport)


def leads_with_origin(portal: Portal, origin_id: str) -> list[dict[str, Any]]:
    return [r for r in portal.records("lead") if r.get("ORIGIN_ID") == origin_id]


async def delivered(portal: Portal, submission_id: str) -> dict[str, Any]:
    leads = await wait_for(lambda: leads_with_origin(portal, submission_id))
    assert len(leads) == 1, leads
    return dict(leads[0])


async def status_of(store: Store, submission_id: str) -> Status | None:
    row = await store.get(submission_id)
    return row.status if row else None


async def wait_delivered(store: Store, ids: list[str]) -> None:
    async def all_delivered() -> bool:
        return all([await status_of(store, i) is Status.DELIVERED for i in ids])

    await wait_for(all_delivered)


# --------------------------------------------------------------------------- hostile requests


@dataclass(frozen=True)
class Hostile:
    """One hostile request and what the gateway must answer; `stored` is what it keeps."""

    name: str
    status: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    path: str = "/forms/contact"
    method: str = "POST"
    stored: str | None = None  # "spam", "accepted", or None for nothing stored
    location: str | None = None  # the start of the Location header, for 303 answers
    ip: str | None = None  # the client address the trusted proxy reports


PHONE = {"phone": "+15550001111"}
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data; boundary=xyz"


def raw(body: bytes, content_type: str, **headers: str) -> dict[str, Any]:
    return {"content": body, "headers": {"Content-Type": content_type, **headers}}


async def _chunks(size: int) -> AsyncIterator[bytes]:
    yield b"phone=%2B15550001111&message="
    for _ in range(size // 1000):
        yield b"x" * 1000


def guarded(**fields: str) -> dict[str, Any]:
    return {"data": {"name": "Ann", **PHONE, **fields}}


HOSTILE: list[Hostile] = [
    # --- routing
    Hostile("unknown form", 404, {"data": PHONE}, path="/forms/nope"),
    Hostile("NUL in the form id", 404, {"data": PHONE}, path="/forms/contact%00"),
    Hostile("a 3000-character form id", 404, {"data": PHONE}, path="/forms/" + "a" * 3000),
    Hostile("GET on a form", 405, method="GET"),
    Hostile("PUT on a form", 405, {"data": PHONE}, method="PUT"),
    # --- content types (415)
    Hostile("no Content-Type", 415, raw(b"phone=%2B15550001111", "")),
    Hostile("text/plain", 415, raw(b"phone=%2B15550001111", "text/plain")),
    Hostile("application/xml", 415, raw(b"<phone>1</phone>", "application/xml")),
    Hostile(
        "gzip-encoded body",
        415,
        raw(b"phone=%2B15550001111", FORM, **{"Content-Encoding": "gzip"}),
    ),
    Hostile("unknown charset", 415, raw(b"phone=%2B15550001111", FORM + "; charset=klingon")),
    # --- unparsable bodies (400)
    Hostile("broken JSON", 400, raw(b'{"phone": ', "application/json")),
    Hostile("a JSON array", 400, {"json": [PHONE]}),
    Hostile("a JSON string", 400, raw(b'"+15550001111"', "application/json")),
    Hostile("JSON null", 400, raw(b"null", "application/json")),
    Hostile("invalid UTF-8 in JSON", 400, raw(b'{"phone": "+1555\xff\xfe"}', "application/json")),
    Hostile(
        "a lone surrogate in JSON",
        400,
        raw(b'{"phone": "+15550001111", "name": "\\ud800"}', "application/json"),
    ),
    Hostile("invalid UTF-8 in a form body", 400, raw(b"phone=%2B15550001111&name=\xff", FORM)),
    Hostile("invalid percent-encoded UTF-8", 400, raw(b"phone=%2B15550001111&name=%C3%28", FORM)),
    Hostile(
        "invalid UTF-8 in multipart",
        400,
        raw(
            b'--xyz\r\nContent-Disposition: form-data; name="phone"\r\n\r\n+15550001111\r\n'
            b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nA\xff\r\n--xyz--\r\n',
            MULTIPART,
        ),
    ),
    Hostile(
        "truncated multipart",
        400,
        raw(b'--xyz\r\nContent-Disposition: form-data; name="phone"\r\n\r\n+1555', MULTIPART),
    ),
    Hostile("multipart without a boundary", 400, raw(b"phone=1", "multipart/form-data")),
    Hostile("JSON nested 50000 deep", 400, raw(b"[" * 50_000, "application/json")),
    Hostile("a form body sent as JSON", 400, raw(b"phone=%2B15550001111", "application/json")),
    Hostile(
        "a 5000-digit number",
        400,
        raw(b'{"phone": "+15550001111", "n": ' + b"9" * 5000 + b"}", "application/json"),
    ),
    Hostile(
        "a 600-part multipart",
        400,
        raw(
            b"".join(
                b'--xyz\r\nContent-Disposition: form-data; name="f%d"\r\n\r\nx\r\n' % i
                for i in range(600)
            )
            + b"--xyz--\r\n",
            MULTIPART,
        ),
    ),
    # --- size (413)
    Hostile("a body over 64 KiB", 413, {"data": {**PHONE, "message": "x" * 70_000}}),
    Hostile(
        "a chunked body over 64 KiB", 413, {"content": _chunks, "headers": {"Content-Type": FORM}}
    ),
    # --- invalid fields (422)
    Hostile("JSON under a form content type", 422, raw(b'{"phone": "+15550001111"}', FORM)),
    Hostile("an object in a field", 422, {"json": {**PHONE, "name": {"first": "A"}}}),
    Hostile("a list of objects", 422, {"json": {"phone": [{"v": "+15550001111"}]}}),
    Hostile("101 fields", 422, {"data": {**PHONE, **{f"f{i}": "x" for i in range(101)}}}),
    Hostile("a 10001-character field", 422, {"data": {**PHONE, "message": "x" * 10_001}}),
    Hostile("a 101-character field name", 422, {"data": {**PHONE, "n" * 101: "x"}}),
    Hostile(
        "51 values of one field",
        422,
        raw(b"phone=%2B15550001111" + b"&tag=x" * 51, FORM),
    ),
    Hostile("a NUL in a value", 422, {"data": {**PHONE, "name": "A\x00B"}}),
    Hostile("no phone and no email", 422, {"data": {"name": "Ann"}}),
    Hostile("a malformed email", 422, {"data": {"email": "ann@@example"}}),
    Hostile("letters in the phone", 422, {"data": {"phone": "+1 555 CALL NOW"}}),
    Hostile("a 3-digit phone", 422, {"data": {"phone": "112"}}),
    Hostile(
        "a file upload",
        422,
        {"data": PHONE, "files": {"cv": ("cv.pdf", b"%PDF-1.4", "application/pdf")}},
    ),
    Hostile(
        "fields in the query string",
        422,
        {"data": {"name": "Ann"}},
        path="/forms/contact?phone=%2B15550001111",
    ),
    # --- idempotency keys
    Hostile("a non-ASCII key", 400, {"data": PHONE, "headers": {"Idempotency-Key": "é".encode()}}),
    Hostile("an empty key", 400, {"data": PHONE, "headers": {"Idempotency-Key": ""}}),
    Hostile("a 256-character key", 400, {"data": {**PHONE, "submission_id": "k" * 256}}),
    Hostile(
        "a key reused with another body",
        409,
        {"data": {"phone": "+15559999999"}, "headers": {"Idempotency-Key": "seed-key"}},
    ),
    # --- origins (403) and CORS
    Hostile(
        "a stranger's Origin", 403, {"data": PHONE, "headers": {"Origin": "https://evil.example"}}
    ),
    Hostile(
        "a stranger's Referer",
        403,
        {"data": PHONE, "headers": {"Referer": "https://evil.example/shop.example"}},
    ),
    Hostile("the null Origin", 403, {"data": PHONE, "headers": {"Origin": "null"}}),
    Hostile("another form's origin", 403, {"data": PHONE, "headers": {"Origin": PARTNER}}),
    Hostile(
        "a CORS preflight from a stranger",
        400,
        {
            "headers": {
                "Origin": "https://evil.example",
                "Access-Control-Request-Method": "POST",
            }
        },
        method="OPTIONS",
    ),
    # --- redirects: never taken from the request
    Hostile(
        "a redirect target in the fields",
        303,
        {
            "data": {**PHONE, "_next": "https://evil.example/", "redirect": "//evil.example"},
            "headers": {**HTML, "Referer": "https://shop.example/landing"},
        },
        stored="accepted",
        location="https://shop.example/thanks",
    ),
    Hostile(
        "an HTML post with bad fields",
        303,
        {"data": {"name": "Ann"}, "headers": HTML},
        location="https://shop.example/oops?error=invalid&fields=phone%7Cemail",
    ),
    # --- bad traces: accepted, flagged, delivered without the trace
    Hostile(
        "a trace that is not an object",
        202,
        {"data": {**PHONE, "trace": "[1,2]"}},
        stored="accepted",
    ),
    Hostile(
        "a trace over MAX_TRACE_BYTES",
        202,
        {"data": {**PHONE, "trace": '{"a":"' + "x" * 2000 + '"}'}},
        stored="accepted",
    ),
    # --- spam: the ordinary success answer, stored as spam, never delivered
    Hostile(
        "the honeypot filled", 202, {"data": {**PHONE, "_gotcha": "http://spam"}}, stored="spam"
    ),
    Hostile(
        "filled in 0.2 s",
        202,
        guarded(_fill_ms="200", **{"cf-turnstile-response": "pass-fast"}),
        path="/forms/guarded",
        stored="spam",
    ),
    Hostile(
        "a fill time that is no number",
        202,
        guarded(_fill_ms="NaN", **{"cf-turnstile-response": "pass-nan"}),
        path="/forms/guarded",
        stored="spam",
    ),
    Hostile("no captcha token", 202, guarded(), path="/forms/guarded", stored="spam"),
    Hostile(
        "a rejected captcha token",
        202,
        guarded(**{"cf-turnstile-response": "fail-1"}),
        path="/forms/guarded",
        stored="spam",
    ),
    # --- the rate limit (5/minute here): every post counts, a forged hop does not help
    *[
        Hostile(
            f"post {n} of 5 from one client", 422, {"data": {"name": "Ann"}}, ip="198.51.100.99"
        )
        for n in range(1, 6)
    ],
    Hostile("a sixth post from that client", 429, {"data": PHONE}, ip="198.51.100.99"),
    Hostile(
        "that client behind a forged hop",
        429,
        {"data": PHONE, "headers": {"X-Forwarded-For": "6.6.6.6, 198.51.100.99"}},
    ),
]

HOSTILE_FORMS = f"""
[forms.contact]
redirect_url = "{SHOP}/thanks"
error_redirect_url = "{SHOP}/oops"
captcha = false

[forms.guarded]
allowed_origins = ["{PARTNER}"]
required = ["name", "phone|email"]
min_fill_seconds = 3
"""


async def test_hostile_requests_get_their_status_and_real_submissions_still_arrive(
    portal: Portal, make_gateway: MakeGateway, verifier: FakeVerifier, tmp_path: Path
) -> None:
    assert len(HOSTILE) >= 40
    gateway = await make_gateway(
        portal,
        FORMS_FILE=forms_file(tmp_path, HOSTILE_FORMS),
        ALLOWED_ORIGINS=SHOP,
        TRUSTED_PROXIES="127.0.0.1",
        RATE_LIMIT_PER_IP="5/minute",
        CAPTCHA_PROVIDER="turnstile",
        CAPTCHA_SECRET=CAPTCHA_SECRET,
        CAPTCHA_VERIFY_URL=verifier.url("turnstile"),
        MAX_TRACE_BYTES=1024,
    )
    valid: list[str] = []
    answered: dict[str, str] = {}  # submission id -> what it must be stored as
    async with gateway.client() as client:

        async def post_valid(n: int) -> None:
            headers = {"X-Forwarded-For": f"192.0.2.{n}"}
            if n % 2:
                fields = {"name": "Ann", "phone": f"+1555100{n:04d}", "_fill_ms": "5000"}
                fields["cf-turnstile-response"] = f"pass-{n}"
                response = await client.post("/forms/guarded", data=fields, headers=headers)
            else:
                response = await client.post(
                    "/forms/contact",
                    data={"phone": f"+1555100{n:04d}"},
                    headers={**headers, "Origin": SHOP},
                )
            assert response.status_code == 202, response.text
            valid.append(response.json()["id"])

        seed = await client.post(
            "/forms/contact", data=PHONE, headers={"Idempotency-Key": "seed-key"}
        )
        valid.append(seed.json()["id"])
        for i, case in enumerate(HOSTILE):
            if i % 4 == 0:
                await post_valid(i)
            kwargs = dict(case.kwargs)
            headers = {"X-Forwarded-For": case.ip or f"203.0.113.{i}", **kwargs.pop("headers", {})}
            if callable(kwargs.get("content")):
                kwargs["content"] = kwargs["content"](70_000)
            response = await client.request(case.method, case.path, headers=headers, **kwargs)
            assert response.status_code == case.status, (case.name, response.text[:300])
            if case.location is not None:
                assert response.headers["location"] == case.location, case.name
            if case.method == "POST" and response.status_code >= 400:
                assert response.headers["content-type"] == "application/json", case.name
            if response.status_code == 429:
                assert 1 <= int(response.headers["retry-after"]) <= 60, case.name
            if case.method == "OPTIONS":
                assert "access-control-allow-origin" not in response.headers
            if response.status_code == 202 and case.stored:
                answered[response.json()["id"]] = case.stored

        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == "ok"

    store = await gateway.store()
    await wait_delivered(store, valid)
    for submission_id in valid:
        await delivered(portal, submission_id)
    for submission_id, stored in answered.items():
        if stored == "spam":
            assert await status_of(store, submission_id) is Status.SPAM
            assert leads_with_origin(portal, submission_id) == []
        else:
            await delivered(portal, submission_id)
    counts = await store.count_by_status()
    spam_rows = sum(1 for case in HOSTILE if case.stored == "spam")
    accepted_rows = sum(1 for case in HOSTILE if case.stored == "accepted")
    assert counts[Status.SPAM] == spam_rows
    await wait_for(lambda: _count(store, Status.DELIVERED, len(valid) + accepted_rows), within=15)
    assert counts[Status.FAILED] == 0
    assert len(portal.records("lead")) == len(valid) + accepted_rows
    # Captcha tokens and fill times steer the gateway; they are not the visitor's data.
    for submission_id in valid:
        row = await store.get(submission_id)
        assert row is not None
        assert not {"cf-turnstile-response", "_fill_ms"} & set(row.fields)


async def _count(store: Store, status: Status, expected: int) -> bool:
    return (await store.count_by_status())[status] == expected


# --------------------------------------------------------------------------- origins and CORS

ORIGIN_FORMS = f"""
[forms.contact]

[forms.partner]
allowed_origins = ["{PARTNER}"]
"""


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, idempotency-key",
    }


@pytest.mark.parametrize("proxied", [False, True], ids=["direct", "behind-a-proxy"])
async def test_origins_and_cors_follow_each_forms_list(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path, proxied: bool
) -> None:
    gateway = await make_gateway(
        portal,
        FORMS_FILE=forms_file(tmp_path, ORIGIN_FORMS),
        ALLOWED_ORIGINS=SHOP,
        TRUSTED_PROXIES="127.0.0.1" if proxied else None,
        RATE_LIMIT_PER_IP="0",
    )
    # Directly: the browser's own address. Behind the proxy: the proxy's, with the client's
    # address in X-Forwarded-For. The origin rules must not care.
    address = "127.0.0.1" if proxied else "127.0.0.2"
    forwarded = {"X-Forwarded-For": "203.0.113.7"} if proxied else {}
    async with from_address(gateway, address) as client:

        async def options(path: str, origin: str) -> httpx.Response:
            return await client.options(path, headers={**forwarded, **preflight(origin)})

        async def post(path: str, **headers: str) -> httpx.Response:
            return await client.post(path, data=PHONE, headers={**forwarded, **headers})

        ok = await options("/forms/contact", SHOP)
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == SHOP
        assert "POST" in ok.headers["access-control-allow-methods"]
        assert "idempotency-key" in ok.headers["access-control-allow-headers"].lower()
        for path, origin in [
            ("/forms/contact", PARTNER),  # another form's origin
            ("/forms/contact", "https://evil.example"),
            ("/forms/partner", "https://evil.example"),
            ("/forms/nope", "https://evil.example"),
        ]:
            refused = await options(path, origin)
            assert refused.status_code == 400, (path, origin)
            assert "access-control-allow-origin" not in refused.headers
        # The partner form takes the global origins and its own.
        for origin in (PARTNER, SHOP):
            answer = await options("/forms/partner", origin)
            assert answer.headers["access-control-allow-origin"] == origin

        accepted = await post("/forms/contact", Origin=SHOP)
        assert accepted.status_code == 202
        assert accepted.headers["access-control-allow-origin"] == SHOP
        assert (await post("/forms/partner", Origin=PARTNER)).status_code == 202
        assert (await post("/forms/contact", Origin=PARTNER)).status_code == 403
        assert (await post("/forms/contact", Referer=f"{SHOP}/landing?x=1")).status_code == 202
        assert (await post("/forms/contact", Referer=f"{PARTNER}/landing")).status_code == 403
        # Origin wins over Referer; no header at all is not a browser post from elsewhere.
        denied = await post("/forms/contact", Origin="https://evil.example", Referer=f"{SHOP}/")
        assert denied.status_code == 403
        assert denied.json() == {"error": "this origin may not post to this form"}
        assert (await post("/forms/contact")).status_code == 202


async def test_without_any_list_every_origin_is_echoed_and_a_form_list_restricts_its_form(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await make_gateway(portal, FORMS_FILE=forms_file(tmp_path, ORIGIN_FORMS))
    async with gateway.client() as client:
        anywhere = await client.options("/forms/contact", headers=preflight("https://a.example"))
        assert anywhere.headers["access-control-allow-origin"] == "https://a.example"
        health = await client.get("/healthz", headers={"Origin": "https://b.example"})
        assert health.headers["access-control-allow-origin"] == "https://b.example"
        refused = await client.options("/forms/partner", headers=preflight("https://a.example"))
        assert refused.status_code == 400
        denied = await client.post(
            "/forms/partner", data=PHONE, headers={"Origin": "https://a.example"}
        )
        assert denied.status_code == 403
        accepted = await client.post(
            "/forms/contact", data=PHONE, headers={"Origin": "https://a.example"}
        )
        assert accepted.status_code == 202


# --------------------------------------------------------------------------- the rate limit


async def test_the_rate_limit_without_a_proxy_counts_the_peer_whatever_it_forwards(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await make_gateway(
        portal, FORMS_FILE=forms_file(tmp_path, ORIGIN_FORMS), RATE_LIMIT_PER_IP="3/minute"
    )
    async with from_address(gateway, "127.0.0.2") as attacker:
        for n in range(3):
            spoofed = {"X-Forwarded-For": f"198.51.100.{n}"}
            response = await attacker.post("/forms/contact", data=PHONE, headers=spoofed)
            assert response.status_code == 202
        limited = await attacker.post(
            "/forms/contact", data=PHONE, headers={"X-Forwarded-For": "198.51.100.200"}
        )
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        assert limited.json()["error"].startswith("too many submissions")
        # Another form has its own budget.
        assert (await attacker.post("/forms/partner", data=PHONE)).status_code == 202
    async with from_address(gateway, "127.0.0.3") as neighbour:
        assert (await neighbour.post("/forms/contact", data=PHONE)).status_code == 202


async def test_the_rate_limit_behind_a_trusted_proxy_counts_the_forwarded_client(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    gateway = await make_gateway(
        portal,
        FORMS_FILE=forms_file(tmp_path, ORIGIN_FORMS),
        RATE_LIMIT_PER_IP="3/minute",
        TRUSTED_PROXIES="127.0.0.1",
    )
    async with from_address(gateway, "127.0.0.1") as proxy:

        async def via_proxy(forwarded: str) -> int:
            headers = {"X-Forwarded-For": forwarded}
            return (await proxy.post("/forms/contact", data=PHONE, headers=headers)).status_code

        assert [await via_proxy("203.0.113.1") for _ in range(3)] == [202, 202, 202]
        assert await via_proxy("203.0.113.1") == 429
        # A hop the client wrote itself, left of the proxy's, changes nothing.
        assert await via_proxy("6.6.6.6, 203.0.113.1") == 429
        assert await via_proxy("203.0.113.2") == 202  # another visitor behind the proxy
    # A peer that is not the proxy is counted by its own address, whatever it forwards.
    async with from_address(gateway, "127.0.0.2") as stranger:
        statuses = [
            (
                await stranger.post(
                    "/forms/contact", data=PHONE, headers={"X-Forwarded-For": f"203.0.113.{n}"}
                )
            ).status_code
            for n in range(10, 14)
        ]
        assert statuses == [202, 202, 202, 429]


async def test_retry_after_says_when_the_client_may_post_again(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal, RATE_LIMIT_PER_IP="1/second")
    async with gateway.client() as client:
        assert (await client.post("/forms/contact", data=PHONE)).status_code == 202
        limited = await client.post("/forms/contact", data=PHONE)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        await asyncio.sleep(1.05)
        assert (await client.post("/forms/contact", data=PHONE)).status_code == 202


async def test_rate_limit_zero_turns_it_off(portal: Portal, make_gateway: MakeGateway) -> None:
    gateway = await make_gateway(portal, RATE_LIMIT_PER_IP="0")
    async with gateway.client() as client:
        statuses = {
            (await client.post("/forms/contact", json={"name": "A"})).status_code for _ in range(40)
        }
    assert statuses == {422}


# --------------------------------------------------------------------------- captcha

CAPTCHA_FORMS = """
[forms.contact]

[forms.open]
captcha = false
"""


async def captcha_gateway(
    make_gateway: MakeGateway,
    portal: Portal,
    tmp_path: Path,
    provider: str,
    verify_url: str,
    **overrides: Any,
) -> Gateway:
    values: dict[str, Any] = {
        "FORMS_FILE": forms_file(tmp_path, CAPTCHA_FORMS, f"{provider}.toml"),
        "CAPTCHA_PROVIDER": provider,
        "CAPTCHA_SECRET": CAPTCHA_SECRET,
        "CAPTCHA_VERIFY_URL": verify_url,
        "DATABASE_URL": db(tmp_path, f"{provider}.db"),
        "RATE_LIMIT_PER_IP": "0",
    }
    values.update(overrides)
    return await make_gateway(portal, **values)


@pytest.mark.parametrize("provider", ["turnstile", "recaptcha", "hcaptcha", "yandex"])
async def test_each_captcha_provider_lets_humans_in_and_stores_bots_as_spam(
    portal: Portal,
    make_gateway: MakeGateway,
    verifier: FakeVerifier,
    tmp_path: Path,
    provider: str,
) -> None:
    gateway = await captcha_gateway(
        make_gateway, portal, tmp_path, provider, verifier.url(provider)
    )
    token_field = TOKEN_FIELDS[provider]
    async with gateway.client() as client:

        async def post(**fields: str) -> str:
            response = await client.post("/forms/contact", data={**PHONE, **fields})
            assert response.status_code == 202, response.text
            assert response.json()["status"] == "accepted"
            submission_id: str = response.json()["id"]
            return submission_id

        human = await post(**{token_field: "pass-human"})
        bot = await post(**{token_field: "fail-bot"})
        no_token = await post()
        reused = await post(**{token_field: "pass-human", "message": "again"})
    store = await gateway.store()
    lead = await delivered(portal, human)
    assert "pass-human" not in json.dumps(lead)
    row = await store.get(human)
    assert row is not None and token_field not in row.fields
    for spam in (bot, no_token, reused):
        assert await status_of(store, spam) is Status.SPAM
        assert leads_with_origin(portal, spam) == []
    # The verifier got the secret, the token and the client's address; no call without a token.
    assert verifier.tokens() == ["pass-human", "fail-bot", "pass-human"]
    ip_key = "ip" if provider == "yandex" else "remoteip"
    assert all(
        r["secret"] == CAPTCHA_SECRET and r[ip_key] == "127.0.0.1" for r in verifier.requests
    )


async def test_a_low_recaptcha_v3_score_is_spam(
    portal: Portal, make_gateway: MakeGateway, verifier: FakeVerifier, tmp_path: Path
) -> None:
    gateway = await captcha_gateway(
        make_gateway, portal, tmp_path, "recaptcha", verifier.url("recaptcha")
    )
    async with gateway.client() as client:
        response = await client.post(
            "/forms/contact", data={**PHONE, "g-recaptcha-response": "pass-lowscore"}
        )
    assert response.status_code == 202
    store = await gateway.store()
    assert await status_of(store, response.json()["id"]) is Status.SPAM


def captcha_count(metrics: str, result: str, reason: str) -> float:
    line = f'gateway_captcha_verifications_total{{reason="{reason}",result="{result}"}} '
    for row in metrics.splitlines():
        if row.startswith(line):
            return float(row[len(line) :])
    return 0.0


@pytest.mark.parametrize(
    ("token", "overrides", "reason", "metric_reason"),
    [
        ("down", {}, "http_502", "http_5xx"),
        ("unavailable", {}, "http_503", "http_5xx"),
        ("internal", {}, "internal-error", "internal-error"),
        ("slow", {"CAPTCHA_TIMEOUT_SECONDS": 0.3}, "timeout", "timeout"),
        (
            "pass-x",
            {"CAPTCHA_VERIFY_URL": f"http://127.0.0.1:{free_port()}/nothing"},
            "unreachable",
            "unreachable",
        ),
    ],
)
async def test_a_verifier_that_cannot_answer_lets_the_submission_through_and_counts_it(
    portal: Portal,
    make_gateway: MakeGateway,
    verifier: FakeVerifier,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    token: str,
    overrides: dict[str, Any],
    reason: str,
    metric_reason: str,
) -> None:
    # Losing real leads to the provider's outage would be worse than a few bots getting in
    # while the rate limit and the honeypot still stand: accepted, delivered, logged, counted.
    gateway = await captcha_gateway(
        make_gateway, portal, tmp_path, "turnstile", verifier.url("turnstile"), **overrides
    )
    with caplog.at_level(logging.WARNING, logger="app.intake"):
        async with gateway.client() as client:
            response = await client.post(
                "/forms/contact", data={**PHONE, "cf-turnstile-response": token}
            )
            metrics = (await client.get("/metrics")).text
        assert response.status_code == 202
        await delivered(portal, response.json()["id"])
    events = [r for r in caplog.records if r.getMessage() == "intake.captcha_unavailable"]
    assert [getattr(r, "reason", None) for r in events] == [reason]
    assert all(CAPTCHA_SECRET not in r.getMessage() for r in caplog.records)
    assert captcha_count(metrics, "unavailable", metric_reason) == 1


@pytest.mark.parametrize(
    ("provider", "token", "overrides", "spam_reason", "metric_reason"),
    [
        ("turnstile", "refuse", {}, "captcha_http_400", "http_4xx"),
        ("turnstile", "garbage", {}, "captcha_not_json", "not_json"),
        ("turnstile", "fail-1", {}, "captcha_invalid-input-response", "refused"),
        (
            "turnstile",
            "pass-x",
            {"CAPTCHA_SECRET": "a-wrong-secret"},
            "captcha_misconfigured",
            "misconfigured",
        ),
        ("yandex", "refuse", {}, "captcha_http_400", "http_4xx"),
        (
            "yandex",
            "pass-x",
            {"CAPTCHA_SECRET": "a-wrong-secret"},
            "captcha_misconfigured",
            "misconfigured",
        ),
    ],
)
async def test_a_verifier_that_refuses_or_answers_nonsense_makes_the_submission_spam(
    portal: Portal,
    make_gateway: MakeGateway,
    verifier: FakeVerifier,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    provider: str,
    token: str,
    overrides: dict[str, Any],
    spam_reason: str,
    metric_reason: str,
) -> None:
    gateway = await captcha_gateway(
        make_gateway, portal, tmp_path, provider, verifier.url(provider), **overrides
    )
    with caplog.at_level(logging.INFO, logger="app.intake"):
        async with gateway.client() as client:
            refused = await client.post(
                "/forms/contact", data={**PHONE, TOKEN_FIELDS[provider]: token}
            )
            control = await client.post("/forms/open", data={"phone": "+15550007777"})
            metrics = (await client.get("/metrics")).text
    assert refused.status_code == 202  # spam gets the ordinary success answer
    await delivered(portal, control.json()["id"])
    store = await gateway.store()
    assert await status_of(store, refused.json()["id"]) is Status.SPAM
    assert leads_with_origin(portal, refused.json()["id"]) == []
    accepted = [r for r in caplog.records if r.getMessage() == "intake.accepted"]
    assert [getattr(r, "spam_reason", None) for r in accepted] == [spam_reason, None]
    assert captcha_count(metrics, "failed", metric_reason) == 1
    # A wrong secret spams every post until someone fixes it: an ERROR, without the secret.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == (["intake.captcha_misconfigured"] if "misconfigured" in spam_reason else [])
    assert all("a-wrong-secret" not in r.getMessage() for r in caplog.records)


SITE_FORMS = f"""
[forms.contact]
allowed_origins = ["{SHOP}", "https://www.shop.example:8443"]
captcha_action = "contact"

[forms.anyaction]
allowed_origins = ["{SHOP}"]
"""


# Turnstile reports a hostname and an action, Yandex a `host` only; the other providers' answers
# are read the same way (tests/unit/test_captcha.py).
@pytest.mark.parametrize("provider", ["turnstile", "yandex"])
async def test_a_token_solved_on_another_site_or_for_another_action_is_spam(
    portal: Portal,
    make_gateway: MakeGateway,
    verifier: FakeVerifier,
    tmp_path: Path,
    provider: str,
) -> None:
    gateway = await make_gateway(
        portal,
        FORMS_FILE=forms_file(tmp_path, SITE_FORMS),
        CAPTCHA_PROVIDER=provider,
        CAPTCHA_SECRET=CAPTCHA_SECRET,
        CAPTCHA_VERIFY_URL=verifier.url(provider),
    )
    token_field = TOKEN_FIELDS[provider]
    reports_action = provider in ("turnstile", "recaptcha")
    cases = [
        ("contact", "pass-1@shop.example#contact", True),
        ("contact", "pass-2@www.shop.example#contact", True),
        ("contact", "pass-3@SHOP.example.", True),  # no action reported: not checked
        ("contact", "pass-4@evil.example#contact", False),
        ("contact", "pass-5@shop.example.evil.example#contact", False),
        ("contact", "pass-6@shop.example#login", not reports_action),
        ("anyaction", "pass-7@shop.example#login", True),
        ("anyaction", "pass-8@evil.example", False),
    ]
    answers = []
    async with gateway.client() as client:
        for form_id, token, _ in cases:
            response = await client.post(f"/forms/{form_id}", data={**PHONE, token_field: token})
            assert response.status_code == 202
            answers.append(response.json()["id"])
    store = await gateway.store()
    for (_, token, passes), submission_id in zip(cases, answers, strict=True):
        if passes:
            await delivered(portal, submission_id)
        else:
            assert await status_of(store, submission_id) is Status.SPAM, token
    assert len(portal.records("lead")) == sum(passes for *_, passes in cases)


async def test_a_replay_is_not_verified_again_and_a_fresh_token_is_no_conflict(
    portal: Portal, make_gateway: MakeGateway, verifier: FakeVerifier, tmp_path: Path
) -> None:
    gateway = await captcha_gateway(
        make_gateway, portal, tmp_path, "turnstile", verifier.url("turnstile")
    )
    async with gateway.client() as client:
        fields = {**PHONE, "submission_id": "render-1", "_fill_ms": "8000"}
        first = await client.post(
            "/forms/contact", data={**fields, "cf-turnstile-response": "pass-a"}
        )
        # embed.js: a network retry (same token), then a fallback post (new token and timing).
        again = await client.post(
            "/forms/contact", json={**fields, "cf-turnstile-response": "pass-a"}
        )
        fallback = await client.post(
            "/forms/contact",
            data={**fields, "_fill_ms": "9500", "cf-turnstile-response": "pass-b"},
            headers=HTML,
        )
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    assert fallback.status_code == 200 and "Thank you" in fallback.text
    assert verifier.tokens() == ["pass-a"]
    await delivered(portal, first.json()["id"])
    assert len(portal.records("lead")) == 1


async def test_a_form_may_go_without_the_captcha(
    portal: Portal, make_gateway: MakeGateway, verifier: FakeVerifier, tmp_path: Path
) -> None:
    gateway = await captcha_gateway(
        make_gateway, portal, tmp_path, "hcaptcha", verifier.url("hcaptcha")
    )
    async with gateway.client() as client:
        response = await client.post("/forms/open", data=PHONE)
    await delivered(portal, response.json()["id"])
    assert verifier.requests == []


# --------------------------------------------------------------------------- fill time


async def test_a_form_filled_faster_than_its_minimum_is_spam(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    forms = forms_file(tmp_path, "[forms.contact]\nmin_fill_seconds = 2\n")
    gateway = await make_gateway(portal, FORMS_FILE=forms, RATE_LIMIT_PER_IP="0")
    async with gateway.client() as client:
        fast = await client.post("/forms/contact", data={**PHONE, "_fill_ms": "450"})
        slow = await client.post("/forms/contact", data={**PHONE, "_fill_ms": "2500"})
        no_script = await client.post("/forms/contact", json=PHONE)
    assert fast.status_code == slow.status_code == no_script.status_code == 202
    store = await gateway.store()
    assert await status_of(store, fast.json()["id"]) is Status.SPAM
    for submission_id in (slow.json()["id"], no_script.json()["id"]):
        lead = await delivered(portal, submission_id)
        assert "_fill_ms" not in lead.get("COMMENTS", "")
    assert leads_with_origin(portal, fast.json()["id"]) == []


# --------------------------------------------------------------------------- redirects


async def test_redirects_go_only_to_the_forms_own_urls(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    forms = forms_file(
        tmp_path,
        f'[forms.contact]\nredirect_url = "{SHOP}/thanks"\n'
        f'error_redirect_url = "{SHOP}/oops?lang=de"\n',
    )
    gateway = await make_gateway(
        portal, FORMS_FILE=forms, ALLOWED_ORIGINS=SHOP, RATE_LIMIT_PER_IP="0"
    )
    async with gateway.client() as client:
        for field_name in ("_next", "redirect", "redirect_url", "return_to", "_redirect"):
            response = await client.post(
                "/forms/contact",
                data={**PHONE, field_name: "https://evil.example/"},
                headers={**HTML, "Origin": SHOP},
            )
            assert response.status_code == 303
            assert response.headers["location"] == f"{SHOP}/thanks"
        invalid = await client.post("/forms/contact", data={"email": "x@"}, headers=HTML)
        assert invalid.headers["location"] == f"{SHOP}/oops?lang=de&error=invalid&fields=email"
        big = await client.post(
            "/forms/contact", data={**PHONE, "message": "x" * 70_000}, headers=HTML
        )
        assert big.headers["location"] == f"{SHOP}/oops?lang=de&error=too_large"
        await client.post("/forms/contact", data=PHONE, headers={"Idempotency-Key": "k"})
        conflict = await client.post(
            "/forms/contact",
            data={"phone": "+15552222222"},
            headers={**HTML, "Idempotency-Key": "k"},
        )
        assert conflict.headers["location"] == f"{SHOP}/oops?lang=de&error=conflict"
        # Strangers and floods get their status, not a redirect; JSON clients get JSON.
        stranger = await client.post(
            "/forms/contact", data=PHONE, headers={**HTML, "Origin": "https://evil.example"}
        )
        assert stranger.status_code == 403 and "location" not in stranger.headers
        as_json = await client.post("/forms/contact", json={"email": "x@"}, headers=HTML)
        assert as_json.status_code == 422 and as_json.json()["errors"] == {
            "email": "not a valid email address"
        }


def test_a_redirect_off_the_allowed_origins_stops_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    forms = forms_file(tmp_path, '[forms.contact]\nredirect_url = "https://evil.example/x"\n')
    settings = gateway_settings(None, tmp_path, FORMS_FILE=forms, ALLOWED_ORIGINS=SHOP)
    with pytest.raises(FormsError, match=r"\[forms.contact\] redirect_url"):
        create_app(settings)
    # The same through the command: exit 2 with the message, before anything listens.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("app.main.configure_logging", lambda **_: None)  # keep pytest's logging
    monkeypatch.setenv("FORMS_FILE", str(forms))
    monkeypatch.setenv("ALLOWED_ORIGINS", SHOP)
    assert cli(["serve", "--port", str(free_port())]) == 2
    assert "redirect_url" in capsys.readouterr().err


# --------------------------------------------------------------------------- idempotency


async def test_concurrent_duplicates_make_one_submission_and_one_answer(
    portal: Portal, make_gateway: MakeGateway
) -> None:
    gateway = await make_gateway(portal, RATE_LIMIT_PER_IP="0")
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(base_url=gateway.url, timeout=15, limits=limits) as client:
        by_header = await asyncio.gather(
            *(
                client.post(
                    "/forms/contact", data=PHONE, headers={"Idempotency-Key": "double-click"}
                )
                for _ in range(20)
            )
        )
        by_field = await asyncio.gather(
            *(
                client.post("/forms/contact", json={**PHONE, "submission_id": "render-42"})
                for _ in range(20)
            )
        )
    for answers in (by_header, by_field):
        assert {r.status_code for r in answers} == {202}
        assert len({r.json()["id"] for r in answers}) == 1
    store = await gateway.store()
    assert (await store.search()).total == 2
    await delivered(portal, by_header[0].json()["id"])
    await delivered(portal, by_field[0].json()["id"])
    assert len(portal.records("lead")) == 2


# --------------------------------------------------------------------------- retention

HORIZON = 3 * 24 * 3600.0  # RETRY_HORIZON_SECONDS' default


async def seed(store: Store, *, days_ago: float, status: str, now: datetime) -> str:
    """A submission created `days_ago`, then brought to `status` the way the worker does."""
    created = now - timedelta(days=days_ago)
    new = NewSubmission(
        id=f"{status}-{days_ago}",
        form_id="contact",
        entity="lead",
        fields={"name": ["Zebulon"], "phone": ["+4917099887766"]},
        crm={
            "entity": "lead",
            "main": "lead",
            "records": {"lead": {"NAME": "Zebulon", "PHONE": [{"VALUE": "+4917099887766"}]}},
            "match": {},
            "utm": {"utm_source": "google"},
        },
        body_hash="h",
        trace='{"url":"https://private.example/"}',
        status=Status.SPAM if status == "spam" else Status.ACCEPTED,
    )
    await store.enqueue(new, now=created)
    if status in ("delivered", "failed"):
        claimed = await store.claim_due(now=created, limit=50, lease=timedelta(minutes=5))
        assert [c.id for c in claimed] == [new.id]
        record = AttemptRecord(
            1,
            created,
            created,
            "delivered" if status == "delivered" else "failed",
            excerpt="NAME Zebulon rejected",
        )
        await store.record_outcomes(
            [Outcome(new.id, record, bitrix_ids={"lead": 7}, error="Zebulon?")], now=created
        )
    return new.id


async def test_retention_erases_personal_data_of_old_finished_submissions(
    tmp_path: Path,
) -> None:
    store = Store(create_engine(db(tmp_path, "retention.db")))
    await migrate(store.engine)
    now = datetime.now(UTC)
    try:
        old_delivered = await seed(store, days_ago=40, status="delivered", now=now)
        old_spam = await seed(store, days_ago=31, status="spam", now=now)
        # Failed: erased after the 3-day retry horizon plus the 30 days (tests/test_retention.py).
        old_failed = await seed(store, days_ago=32, status="failed", now=now)
        recent = await seed(store, days_ago=29, status="delivered", now=now)
        old_waiting = await seed(store, days_ago=41, status="accepted", now=now)

        assert await erase_expired(store, days=30, horizon_seconds=HORIZON, now=now) == 2
        # Erased rows stay erased.
        assert await erase_expired(store, days=30, horizon_seconds=HORIZON, now=now) == 0
        for submission_id in (old_delivered, old_spam):
            row = await store.get(submission_id)
            assert row is not None
            assert (row.fields, row.trace, row.last_error) == ({}, None, None)
            assert "Zebulon" not in json.dumps(row.crm) and "google" not in json.dumps(row.crm)
            assert row.crm["records"] == {"lead": {}}
            assert all(a.excerpt is None for a in await store.attempts_of(submission_id))
        erased = await store.get(old_delivered)
        assert erased is not None
        assert (erased.status, erased.bitrix_ids) == (Status.DELIVERED, {"lead": 7})
        # A failed submission within the horizon plus the retention may still be retried by
        # hand, a waiting one is still owed to the portal, a recent one is within the
        # retention: all keep their data.
        for submission_id in (old_failed, old_waiting, recent):
            row = await store.get(submission_id)
            assert row is not None and row.fields["name"] == ["Zebulon"] and row.trace
        # 0 = keep forever
        assert await erase_expired(store, days=0, horizon_seconds=HORIZON, now=now) == 0
    finally:
        await store.engine.dispose()


async def test_the_gateway_runs_retention_at_start_and_admin_shows_the_erased_row(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    url = db(tmp_path, "aged.db")
    store = Store(create_engine(url))
    await migrate(store.engine)
    old = await seed(store, days_ago=45, status="delivered", now=datetime.now(UTC))
    await store.engine.dispose()
    gateway = await make_gateway(
        portal, DATABASE_URL=url, ADMIN_TOKEN="t0ken-for-admin-1-0123456789abcdef"
    )
    checker = await gateway.store()

    async def erased() -> bool:
        row = await checker.get(old)
        return row is not None and row.fields == {}

    await wait_for(erased)
    async with gateway.client() as client:
        shown = await client.get(
            f"/admin/submissions/{old}",
            headers={"Authorization": "Bearer t0ken-for-admin-1-0123456789abcdef"},
        )
    assert shown.status_code == 200, shown.text
    assert shown.json()["status"] == "delivered"
    assert "Zebulon" not in shown.text and "4917099887766" not in shown.text


# --------------------------------------------------------------------------- privacy

PRIVATE = {
    "name": "Zebulon",
    "last_name": "Quimbyson",
    "phone": "+49 170 9988 7766",
    "email": "zebulon.quimbyson@example.org",
    "trace": '{"url":"https://private-landing.example/"}',
}
# Long enough that no uuid or timestamp in the log can contain one by chance.
NEVER_IN_LOGS = (
    "Zebulon",
    "Quimbyson",
    "9988 7766",
    "99887766",
    "zebulon.quimbyson",
    "private-landing",
)


def test_the_front_door_logs_no_secret_and_no_personal_data(
    tmp_path: Path, verifier: FakeVerifier
) -> None:
    from app.sandbox import Emulator, EmulatorConfig, create_emulator_app

    webhook_secret = "hush-front-door-0077"
    admin_token = "admin-token-front-door-31-0123456789"
    forms = forms_file(
        tmp_path,
        "[forms.contact]\ncaptcha = false\n\n"
        "[forms.guarded]\nmin_fill_seconds = 2\nrequired = ['name', 'phone|email']\n",
    )
    emulator = Emulator(EmulatorConfig(secret=webhook_secret))
    with running(create_emulator_app(emulator)) as bitrix:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = clean_env(
            B24_WEBHOOK_URL=f"{bitrix.url}/rest/1/{webhook_secret}/",
            LOG_LEVEL="DEBUG",
            LOG_FORMAT="json",
            FORMS_FILE=str(forms),
            ALLOWED_ORIGINS=SHOP,
            TRUSTED_PROXIES="127.0.0.1",
            RATE_LIMIT_PER_IP="3/minute",
            CAPTCHA_PROVIDER="turnstile",
            CAPTCHA_SECRET=CAPTCHA_SECRET,
            CAPTCHA_VERIFY_URL=verifier.url("turnstile"),
            ADMIN_TOKEN=admin_token,
        )
        command = [console_script(), "serve", "--port", str(port)]
        with process(command, tmp_path, env) as proc:
            wait_healthy(url, proc)
            answers = _front_door_traffic(url, admin_token)
            deadline = time.monotonic() + 15
            while len(emulator.snapshot()["records"]["lead"]) < 6:  # type: ignore[index]
                assert time.monotonic() < deadline, proc.output
                time.sleep(0.1)
            metrics = httpx.get(f"{url}/metrics").text
            ready = httpx.get(f"{url}/readyz").text
        log = proc.output
    for event in ("intake.accepted", "delivery.delivered", "intake.captcha_unavailable"):
        assert event in log
    assert '"spam_reason": "captcha_invalid-input-response"' in log
    assert '"spam_reason": "honeypot"' in log and '"spam_reason": "too_fast"' in log
    for secret in (webhook_secret, CAPTCHA_SECRET, admin_token):
        assert secret not in log
        for text in (metrics, ready, *answers):
            assert secret not in text
    for personal in NEVER_IN_LOGS:
        assert personal not in log, personal


def _front_door_traffic(url: str, admin_token: str) -> list[str]:
    """Every path of the front door once, each request full of personal data."""
    answers: list[str] = []
    statuses: list[int] = []

    def post(path: str, ip: str, **kwargs: Any) -> httpx.Response:
        headers = {"X-Forwarded-For": ip, **kwargs.pop("headers", {})}
        response = httpx.post(f"{url}{path}", headers=headers, timeout=15, **kwargs)
        answers.append(response.text)
        statuses.append(response.status_code)
        return response

    captcha = "cf-turnstile-response"
    post("/forms/contact", "192.0.2.1", data=PRIVATE)  # delivered
    post("/forms/contact", "192.0.2.15", files={k: (None, v) for k, v in PRIVATE.items()})
    truncated = b'--xyz\r\nContent-Disposition: form-data; name="name"\r\n\r\nZebulon Quimbyson'
    post(
        "/forms/contact",
        "192.0.2.16",
        content=truncated,
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    post("/forms/guarded", "192.0.2.2", data={**PRIVATE, captcha: "pass-1", "_fill_ms": "9000"})
    post("/forms/guarded", "192.0.2.3", data={**PRIVATE, captcha: "down"})  # unverified
    post("/forms/contact", "192.0.2.4", data={**PRIVATE, "_gotcha": "x"})  # spam
    post("/forms/guarded", "192.0.2.5", data={**PRIVATE, captcha: "fail-1"})  # spam
    post("/forms/guarded", "192.0.2.6", data={**PRIVATE, captcha: "pass-2", "_fill_ms": "90"})
    post("/forms/contact", "192.0.2.7", data={**PRIVATE, "email": "zebulon.quimbyson@"})  # 422
    post("/forms/contact", "192.0.2.8", json={**PRIVATE, "name": {"x": "Zebulon"}})  # 422
    broken = json.dumps(PRIVATE).encode()[:-5]
    post(
        "/forms/contact", "192.0.2.9", content=broken, headers={"Content-Type": "application/json"}
    )
    post("/forms/contact", "192.0.2.10", data={**PRIVATE, "message": "Zebulon " * 9000})  # 413
    post("/forms/contact", "192.0.2.11", content=b"Zebulon", headers={"Content-Type": "text/x"})
    post("/forms/contact", "192.0.2.12", data=PRIVATE, headers={"Origin": "https://evil.example"})
    post("/forms/contact", "192.0.2.13", data=PRIVATE, headers={"Idempotency-Key": "Zebulon"})
    post(
        "/forms/contact",
        "192.0.2.13",
        data={**PRIVATE, "message": "?"},
        headers={"Idempotency-Key": "Zebulon"},
    )
    post("/forms/contact", "192.0.2.13", data={**PRIVATE, "message": "3rd"})  # delivered
    post("/forms/contact", "192.0.2.13", data=PRIVATE)  # the fourth in a minute: 429
    post("/forms/Zebulon-Quimbyson", "192.0.2.14", data=PRIVATE)  # 404
    auth = {"Authorization": f"Bearer {admin_token}"}
    listing = httpx.get(f"{url}/admin/submissions", headers=auth)
    answers.append(listing.text)
    for item in listing.json()["items"]:
        answers.append(httpx.get(f"{url}/admin/submissions/{item['id']}", headers=auth).text)
    assert statuses == [
        202, 202, 400, 202, 202, 202, 202, 202, 422, 422, 400, 413, 415, 403, 202, 409, 202, 429,
        404
    ], statuses  # fmt: skip
    return answers


async def test_secrets_never_reach_an_answer_even_when_the_verifier_echoes_them(
    portal: Portal, make_gateway: MakeGateway, tmp_path: Path
) -> None:
    # A verifier that answers with the secret it was sent: nothing of it may reach the client.
    async def echo(request: Request) -> Response:
        form = await request.form()
        return PlainTextResponse(f"bad secret {form.get('secret')}", status_code=500)

    with running(Starlette(routes=[Route("/", echo, methods=["POST"])])) as echoing:
        gateway = await captcha_gateway(
            make_gateway, portal, tmp_path, "turnstile", echoing.url + "/"
        )
        async with gateway.client() as client:
            response = await client.post(
                "/forms/contact", data={**PHONE, "cf-turnstile-response": "t"}
            )
            metrics = (await client.get("/metrics")).text
    assert response.status_code == 202
    assert CAPTCHA_SECRET not in response.text and CAPTCHA_SECRET not in metrics
