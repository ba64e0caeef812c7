"""Client input never reaches a server error: every way of decoding or converting what a client
chooses (the declared charset, numbers, nesting, keys, bytes, framing) ends in a 4xx with a
plain JSON error and no logged traceback. The gateway runs as a real server; its log records,
the server's own included, are captured for each request."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from app.main import create_app
from tests.conftest import gateway_settings
from tests.servers import RunningServer

SHOP = "https://shop.example"
FORMS = f"""
[forms.contact]
error_redirect_url = "{SHOP}/oops"
required = ["name", "phone|email"]
[forms.contact.fields]
budget = "OPPORTUNITY"
"""
FORM = "application/x-www-form-urlencoded"
JSON = "application/json"
MULTIPART = "multipart/form-data; boundary=xyz"
GOOD = b"name=Ann&phone=%2B15550001111"
GOOD_JSON = b'{"name": "Ann", "phone": "+15550001111"'
HTML = {"Accept": "text/html"}


class Captured(logging.Handler):
    """Every record of the app's and the server's loggers (uvicorn's do not reach the root)."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def errors(self) -> list[str]:
        return [
            f"{r.name}: {r.getMessage()}"
            for r in self.records
            if r.levelno >= logging.ERROR or r.exc_info
        ]


@dataclass
class Running:
    url: str
    port: int
    log: Captured = field(default_factory=Captured)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp_path = tmp_path_factory.mktemp("hostile")
    forms = tmp_path / "forms.toml"
    forms.write_text(FORMS)
    settings = gateway_settings(
        None, tmp_path, FORMS_FILE=forms, ALLOWED_ORIGINS=SHOP, WORKER=False
    )
    server = RunningServer(create_app(settings))
    server.start()
    running = Running(server.url, server.port)
    loggers = [
        logging.getLogger(),
        logging.getLogger("uvicorn"),
        logging.getLogger("uvicorn.error"),
    ]
    for logger in loggers:
        logger.addHandler(running.log)
    yield running
    for logger in loggers:
        logger.removeHandler(running.log)
    server.stop()


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    body: bytes
    content_type: str = FORM
    headers: dict[str, str] = field(default_factory=dict)


def part(name: str, value: str, *headers: str) -> bytes:
    extra = "".join(f"{h}\r\n" for h in headers)
    return (
        f'--xyz\r\nContent-Disposition: form-data; name="{name}"\r\n{extra}\r\n{value}\r\n'
    ).encode()


MULTIPART_GOOD = part("name", "Ann") + part("phone", "+15550001111")

CASES = [
    # --- the declared charset is the client's to choose
    Case(
        "a real charset (windows-1251) is read",
        202,
        GOOD + b"&budget=%E9",
        f"{FORM}; charset=windows-1251",
    ),
    *[
        Case(
            f"a bytes codec as the charset ({name})",
            415,
            GOOD + b"&budget=%41",
            f"{FORM}; charset={name}",
        )
        for name in ("rot13", "base64", "hex", "zlib", "bz2", "uu", "quopri")
    ],
    Case("an empty charset", 415, GOOD, f"{FORM}; charset="),
    Case("a 3000-character charset", 415, GOOD, f"{FORM}; charset={'u' * 3000}"),
    Case("bytes invalid in utf-16", 400, GOOD + b"&budget=%FF", f"{FORM}; charset=utf-16"),
    Case(
        "a raw non-ASCII byte under latin-1",
        400,
        GOOD + b"&budget=\xe9",
        f"{FORM}; charset=latin-1",
    ),
    Case("a lone surrogate from utf-7", 400, GOOD + b"&budget=%2B2AA-", f"{FORM}; charset=utf-7"),
    Case(
        "a lone surrogate from unicode-escape",
        400,
        GOOD + b"&budget=%5Cud800",
        f"{FORM}; charset=unicode_escape",
    ),
    Case(
        "a charset on JSON that is not UTF-8",
        400,
        '{"name": "Ann"}'.encode("utf-16"),
        f"{JSON}; charset=utf-16",
    ),
    # --- percent-encoding
    Case("a percent-encoded lone surrogate", 400, GOOD + b"&budget=%ED%A0%80"),
    Case("a percent-encoded NUL in a name", 422, GOOD + b"&a%00b=1"),
    Case("a percent-encoded NUL in a value", 422, GOOD + b"&budget=1%002"),
    Case("a 20000-character field name", 422, GOOD + b"&" + b"n" * 20_000 + b"=1"),
    # --- numbers: their size and kind are the client's to choose
    Case("a float beyond double range", 400, GOOD_JSON + b', "budget": 1e999}', JSON),
    Case("a negative float beyond double range", 400, GOOD_JSON + b', "budget": -1e999}', JSON),
    Case("NaN", 400, GOOD_JSON + b', "budget": NaN}', JSON),
    Case("Infinity inside the trace object", 400, GOOD_JSON + b', "trace": {"a": Infinity}}', JSON),
    Case("a 4400-digit integer", 400, GOOD_JSON + b', "budget": ' + b"9" * 4400 + b"}", JSON),
    Case(
        "a 5000-digit idempotency key number",
        400,
        GOOD_JSON + b', "submission_id": ' + b"7" * 4000 + b"}",
        JSON,
    ),
    Case("a fill time beyond double range", 400, GOOD_JSON + b', "_fill_ms": 1e400}', JSON),
    # --- JSON structure
    Case(
        "a duplicated key",
        400,
        b'{"name": "Ann", "phone": "+15550001111", "phone": "+15550002222"}',
        JSON,
    ),
    Case(
        "a duplicated key inside the trace", 400, GOOD_JSON + b', "trace": {"a": 1, "a": 2}}', JSON
    ),
    Case(
        "a trace nested 40 deep",
        400,
        GOOD_JSON + b', "trace": ' + b'{"a":' * 40 + b"1" + b"}" * 41,
        JSON,
    ),
    Case(
        "a list nested 40 deep",
        400,
        GOOD_JSON + b', "budget": ' + b"[" * 40 + b"]" * 40 + b"}",
        JSON,
    ),
    Case("a number at the top level", 400, b"5", JSON),
    Case("true at the top level", 400, b"true", JSON),
    Case("an empty JSON body", 400, b"", JSON),
    Case("a lone surrogate in a key", 400, GOOD_JSON + b', "\\udc00": "x"}', JSON),
    Case("a lone surrogate in the trace", 400, GOOD_JSON + b', "trace": {"a": "\\ud800"}}', JSON),
    Case("a NUL in a key", 422, GOOD_JSON + b', "a\\u0000": "x"}', JSON),
    Case("a NUL in a value", 422, GOOD_JSON + b', "budget": "1\\u00002"}', JSON),
    Case("a 50000-character key", 422, GOOD_JSON + b', "' + b"k" * 50_000 + b'": "x"}', JSON),
    # --- multipart edge cases
    Case(
        "a part name in RFC 2231 form with invalid UTF-8",
        400,
        MULTIPART_GOOD
        + b"--xyz\r\nContent-Disposition: form-data; name*=UTF-8''%ff\r\n\r\nx\r\n--xyz--\r\n",
        MULTIPART,
    ),
    Case(
        "a part without Content-Disposition",
        400,
        MULTIPART_GOOD + b"--xyz\r\n\r\nx\r\n--xyz--\r\n",
        MULTIPART,
    ),
    Case(
        "a 300-character boundary",
        400,
        b"--"
        + b"b" * 300
        + b'\r\nContent-Disposition: form-data; name="name"\r\n\r\nAnn\r\n--'
        + b"b" * 300
        + b"--\r\n",
        "multipart/form-data; boundary=" + "b" * 300,
    ),
    Case(
        "a 60 KB part header",
        400,
        part("name", "Ann", "X-Pad: " + "a" * 60_000) + b"--xyz--\r\n",
        MULTIPART,
    ),
    Case(
        "3000 part headers", 400, part("name", "Ann", *["X: a"] * 3000) + b"--xyz--\r\n", MULTIPART
    ),
    Case(
        "a NUL in a part name",
        422,
        MULTIPART_GOOD + part("a\x00b", "x") + b"--xyz--\r\n",
        MULTIPART,
    ),
    Case(
        "a part in an unknown charset",
        202,
        part("name", "Ann", "Content-Type: text/plain; charset=klingon")
        + part("phone", "+15550001111")
        + b"--xyz--\r\n",
        MULTIPART,
    ),
    # --- headers
    Case("an Origin with an unclosed IPv6 bracket", 403, GOOD, headers={"Origin": "http://[::1"}),
    Case(
        "a Referer with an unclosed IPv6 bracket", 403, GOOD, headers={"Referer": "http://[::1/x"}
    ),
    Case(
        "an Origin with a port out of range",
        403,
        GOOD,
        headers={"Origin": "https://shop.example:99999999999"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_gets_a_4xx_with_a_json_error_and_no_traceback(
    gateway: Running, case: Case
) -> None:
    before = len(gateway.log.records)
    with httpx.Client(base_url=gateway.url, timeout=15) as client:
        response = client.post(
            "/forms/contact",
            content=case.body,
            headers={"Content-Type": case.content_type, **case.headers},
        )
        # The next request on the same connection starts only after the last one's handling,
        # log lines included, is over.
        assert client.get("/healthz").status_code == 200
    assert response.status_code == case.status, response.text[:300]
    if case.status >= 400:
        assert response.headers["content-type"] == "application/json"
        assert set(response.json()) <= {"error", "errors"} and response.json()["error"]
    new = Captured()
    new.records = gateway.log.records[before:]
    assert new.errors() == []


def raw_request(port: int, head: bytes, body: bytes, *, close_early: bool = False) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"POST /forms/contact HTTP/1.1\r\nHost: gateway\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n" + head + b"\r\n" + body
        )
        if close_early:
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


@pytest.mark.parametrize(
    ("name", "head", "body"),
    [
        (
            "a chunk size past any integer",
            b"Transfer-Encoding: chunked\r\n",
            b"f" * 40 + b"\r\nab\r\n0\r\n\r\n",
        ),
        ("a 5000-digit Content-Length", b"Content-Length: " + b"9" * 5000 + b"\r\n", GOOD),
        ("a superscript digit as Content-Length", b"Content-Length: \xb2\r\n", GOOD),
        ("two Content-Lengths", b"Content-Length: 29\r\nContent-Length: 30\r\n", GOOD),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_broken_framing_is_refused_without_a_traceback(
    gateway: Running, name: str, head: bytes, body: bytes
) -> None:
    before = len(gateway.log.records)
    answer = raw_request(gateway.port, head, body)
    assert answer.startswith(b"HTTP/1.1 400"), (name, answer[:200])
    httpx.get(f"{gateway.url}/healthz", timeout=5)
    new = Captured()
    new.records = gateway.log.records[before:]
    assert new.errors() == []


def test_a_client_that_hangs_up_mid_body_leaves_no_traceback(gateway: Running) -> None:
    before = len(gateway.log.records)
    raw_request(gateway.port, b"Content-Length: 5000\r\n", GOOD, close_early=True)
    raw_request(
        gateway.port,
        b"Transfer-Encoding: chunked\r\n",
        b"1d\r\n" + GOOD + b"\r\n",
        close_early=True,
    )
    for _ in range(20):  # the server notices the hang-up on its own time
        httpx.get(f"{gateway.url}/healthz", timeout=5)
    new = Captured()
    new.records = gateway.log.records[before:]
    assert new.errors() == []


@pytest.mark.parametrize(
    ("name", "body", "content_type", "fields"),
    [
        ("an unknown over-long name", GOOD + b"&" + b"x" * 150 + b"=1", FORM, None),
        ("a name with a NUL", GOOD + b"&%3Cscript%3E%00=1", FORM, None),
        ("a name holding markup, 51 times", GOOD + b"&%3Cb%3Ehi=1" * 51, FORM, None),
        (
            "a file under a made-up name",
            MULTIPART_GOOD
            + b"--xyz\r\nContent-Disposition: form-data; "
            + b'name="call_0800_now"; filename="a.txt"\r\n\r\nx\r\n--xyz--\r\n',
            MULTIPART,
            None,
        ),
        (
            "an own field with a made-up one",
            GOOD + b"&message=" + b"m" * 10_001 + b"&call_0800_now=" + b"x" * 10_001,
            FORM,
            "message",
        ),
        ("a missing required field", b"phone=%2B15550001111&call_0800_now=1", FORM, "name"),
    ],
    ids=lambda value: value if isinstance(value, str) and " " in value else "",
)
def test_the_error_redirect_names_only_the_forms_own_fields(
    gateway: Running, name: str, body: bytes, content_type: str, fields: str | None
) -> None:
    response = httpx.post(
        f"{gateway.url}/forms/contact",
        content=body,
        headers={"Content-Type": content_type, **HTML},
    )
    assert response.status_code == 303, (name, response.text)
    location = response.headers["location"]
    assert location.startswith(f"{SHOP}/oops?error=")
    query = parse_qs(urlsplit(location).query)
    assert query.get("fields", [None])[0] == fields
    for made_up in ("xxx", "script", "<b>", "call_0800"):
        assert made_up not in location


def test_the_error_redirect_names_required_groups_as_the_form_writes_them(
    gateway: Running,
) -> None:
    response = httpx.post(f"{gateway.url}/forms/contact", data={"budget": "5"}, headers=HTML)
    assert response.status_code == 303
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["fields"] == ["name,phone|email"]
