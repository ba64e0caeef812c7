"""Fuzzing the front door: schemathesis against the running gateway's own OpenAPI document (no
input may cause a 5xx), and hypothesis properties of the body parser and the trace check."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from starlette.requests import Request

from app.intake.body import JSON_TYPE, MULTIPART, URLENCODED, BodyError, ParsedBody, parse_body
from app.main import create_app
from app.trace import UTM_KEYS, TraceProblem, check_trace
from tests.conftest import gateway_settings
from tests.servers import RunningServer

FORMS = """
[forms.contact]

[forms.order]
entity = "deal"
required = ["name", "phone|email"]
min_fill_seconds = 2
"""

# --------------------------------------------------------------------------- schemathesis


@pytest.fixture(scope="module")
def fuzz_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A sandbox gateway (the emulator in-process), every front-door check switched on.

    No ADMIN_TOKEN: the admin API is not mounted, so the run spends its time on what the open
    internet can reach.
    """
    tmp_path = tmp_path_factory.mktemp("fuzz")
    forms = tmp_path / "forms.toml"
    forms.write_text(FORMS)
    settings_ = gateway_settings(
        None,
        tmp_path,
        FORMS_FILE=forms,
        ALLOWED_ORIGINS="https://shop.example",
        TRUSTED_PROXIES="127.0.0.1",
        # On, so every case passes through the limiter, but too high to refuse the run.
        RATE_LIMIT_PER_IP="100000/minute",
        MAX_TRACE_BYTES=2048,
    )
    server = RunningServer(create_app(settings_))
    server.start()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_gateway: str) -> Any:
    document = httpx.get(f"{fuzz_gateway}/openapi.json").json()
    # Random form ids would almost all be 404s and never reach the body parser: offer the
    # declared forms as well as any string.
    for operation in document["paths"].get("/forms/{form_id}", {}).values():
        for parameter in operation.get("parameters", []):
            if parameter["name"] == "form_id":
                parameter["schema"] = {
                    "anyOf": [{"enum": ["contact", "order"]}, {"type": "string"}]
                }
    return schemathesis.openapi.from_dict(document)


def test_no_generated_request_makes_a_server_error(fuzz_schema: Any, fuzz_gateway: str) -> None:
    # Each operation's hypothesis strategy, driven here rather than through schemathesis'
    # pytest plugin, which reaches into pytest internals that change between releases.
    operations = [result.ok() for result in fuzz_schema.get_all_operations()]
    assert any(op.path == "/forms/{form_id}" for op in operations)
    calls: list[int] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=15,
            deadline=None,
            database=None,  # no .hypothesis folder in the working tree
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            calls.append(1)
            case.call_and_validate(base_url=fuzz_gateway, checks=[not_a_server_error])

        call()
    assert len(calls) > 15  # the strategies really generated requests (15 for the form post)


def test_the_openapi_document_describes_the_three_body_types(fuzz_gateway: str) -> None:
    document = httpx.get(f"{fuzz_gateway}/openapi.json").json()
    operation = document["paths"]["/forms/{form_id}"]["post"]
    assert set(operation["requestBody"]["content"]) == {URLENCODED, MULTIPART, JSON_TYPE}
    assert {"403", "429"} <= set(operation["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in operation["parameters"])


# --------------------------------------------------------------------------- the body parser

LIMIT = 4096
CLIENT_STATUSES = {400, 413, 415, 422}
BOUNDARY = "hypothesis-7c1e-boundary"


def request_for(body: bytes, content_type: str | None, *, chunk: int = 512) -> Request:
    """A request whose body arrives in chunks, as from a socket."""
    headers = [] if content_type is None else [(b"content-type", content_type.encode("latin-1"))]
    scope = {"type": "http", "method": "POST", "path": "/forms/x", "headers": headers}
    pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)] or [b""]

    async def receive() -> dict[str, Any]:
        piece = pieces.pop(0) if pieces else b""
        return {"type": "http.request", "body": piece, "more_body": bool(pieces)}

    return Request(scope, receive)


def parse(body: bytes, content_type: str | None, *, limit: int = LIMIT) -> ParsedBody:
    return asyncio.run(parse_body(request_for(body, content_type), limit=limit))


CONTENT_TYPES = st.sampled_from(
    [
        URLENCODED,
        f"{URLENCODED}; charset=latin-1",
        f"{MULTIPART}; boundary={BOUNDARY}",
        MULTIPART,
        JSON_TYPE,
        "application/vnd.api+json",
        "text/plain",
        "",
        None,
    ]
)
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None, database=None)


@PROPERTY_SETTINGS
@given(body=st.binary(max_size=600) | st.text(max_size=300).map(str.encode), kind=CONTENT_TYPES)
def test_any_body_is_parsed_or_refused_with_a_client_status(body: bytes, kind: str | None) -> None:
    try:
        parsed = parse(body, kind)
    except BodyError as exc:
        assert exc.status in CLIENT_STATUSES
        return
    for name, values in parsed.fields.items():
        assert name and name == name.strip() and "\x00" not in name
        assert all(isinstance(v, str) and "\x00" not in v for v in values)
        assert "\ud800" not in name  # text the database and the hash can take
        name.encode("utf-8")
        for v in values:
            v.encode("utf-8")


NAMES = st.text(
    alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="_-."),
    min_size=1,
    max_size=30,
).filter(lambda n: n != "trace")
VALUES = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r"),
    max_size=40,
)
FIELDS = st.dictionaries(NAMES, st.lists(VALUES, min_size=1, max_size=3), max_size=12)


def encode(fields: dict[str, list[str]], kind: str) -> tuple[bytes, str]:
    if kind == "json":
        return json.dumps(fields).encode(), JSON_TYPE
    if kind == "urlencoded":
        return urllib.parse.urlencode(fields, doseq=True).encode(), URLENCODED
    parts = [
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, values in fields.items()
        for value in values
    ]
    body = ("".join(parts) + f"--{BOUNDARY}--\r\n").encode()
    return body, f"{MULTIPART}; boundary={BOUNDARY}"


@PROPERTY_SETTINGS
@given(fields=FIELDS, kind=st.sampled_from(["json", "urlencoded", "multipart"]))
def test_every_encoding_of_a_form_parses_back_to_its_fields(
    fields: dict[str, list[str]], kind: str
) -> None:
    body, content_type = encode(fields, kind)
    parsed = parse(body, content_type, limit=1 << 20)
    # Names are NFC-stable here; values come back exactly, blank ones included.
    assert parsed.fields == {name: values for name, values in fields.items()}


@PROPERTY_SETTINGS
@given(
    extra=st.integers(min_value=1, max_value=3000),
    chunk=st.integers(min_value=1, max_value=2048),
    kind=st.sampled_from([URLENCODED, JSON_TYPE, f"{MULTIPART}; boundary={BOUNDARY}"]),
)
def test_a_body_over_the_limit_is_413_however_it_is_chunked(
    extra: int, chunk: int, kind: str
) -> None:
    body = b"x" * (LIMIT + extra)
    with pytest.raises(BodyError) as refused:
        asyncio.run(parse_body(request_for(body, kind, chunk=chunk), limit=LIMIT))
    assert refused.value.status == 413


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)


@PROPERTY_SETTINGS
@given(document=st.dictionaries(NAMES, JSON_VALUES, max_size=8))
def test_a_json_object_of_any_shape_is_fields_or_a_422(document: dict[str, Any]) -> None:
    try:
        parsed = parse(json.dumps(document).encode(), JSON_TYPE, limit=1 << 20)
    except BodyError as exc:
        assert exc.status == 422
        assert set(exc.errors) <= set(document)
        return
    for name, value in document.items():
        items = value if isinstance(value, list) else [value]
        assert not any(isinstance(item, dict | list) for item in items)
        kept = [item for item in items if item is not None]
        assert len(parsed.fields.get(name, [])) == len(kept)


# --------------------------------------------------------------------------- the trace check

MAX_TRACE = 2048
ANY_INPUT = JSON_VALUES | st.text(max_size=200) | st.binary(max_size=50) | st.just(float("nan"))


@PROPERTY_SETTINGS
@given(raw=ANY_INPUT, allow_ids=st.booleans())
def test_check_trace_never_raises_and_sends_only_objects_or_ids(
    raw: object, allow_ids: bool
) -> None:
    trace = check_trace(raw, allow_ids=allow_ids, max_bytes=MAX_TRACE)
    assert trace.problem is None or isinstance(trace.problem, TraceProblem)
    if trace.value is None:
        return
    assert trace.problem is None
    if trace.is_id:
        # Only where the form opts in (`trace_ids`): an id links to anyone's trace.
        assert allow_ids and trace.value.isdigit() and int(trace.value) > 0
    else:
        assert isinstance(json.loads(trace.value), dict)
        assert len(trace.value.encode("utf-8")) <= MAX_TRACE


OBJECTS = st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=6)


@PROPERTY_SETTINGS
@given(
    obj=OBJECTS,
    indent=st.sampled_from([None, 0, 2]),
    ensure_ascii=st.booleans(),
    padding=st.sampled_from(["", " ", "\n", "\t "]),
)
def test_a_valid_object_string_is_sent_byte_for_byte(
    obj: dict[str, Any], indent: int | None, ensure_ascii: bool, padding: str
) -> None:
    text = padding + json.dumps(obj, indent=indent, ensure_ascii=ensure_ascii) + padding
    trace = check_trace(text, max_bytes=1 << 20)
    assert trace.problem is None and not trace.is_id
    assert trace.value == text


@PROPERTY_SETTINGS
@given(obj=OBJECTS)
def test_an_object_from_a_json_body_is_serialised_compactly(obj: dict[str, Any]) -> None:
    trace = check_trace(obj, max_bytes=1 << 20)
    assert trace.value == json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    assert json.loads(trace.value) == obj


@PROPERTY_SETTINGS
@given(value=JSON_VALUES.filter(lambda v: not isinstance(v, dict)))
def test_json_that_is_not_an_object_is_flagged_unless_it_is_a_trace_id(value: object) -> None:
    trace = check_trace(json.dumps(value), allow_ids=True, max_bytes=1 << 20)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        assert trace.is_id and trace.value == str(value)
    else:
        assert trace.value is None and trace.problem is TraceProblem.NOT_OBJECT


@PROPERTY_SETTINGS
@given(obj=OBJECTS, extra=st.integers(min_value=1, max_value=500))
def test_an_object_over_the_cap_is_flagged_too_large(obj: dict[str, Any], extra: int) -> None:
    text = json.dumps({**obj, "pad": "x" * (MAX_TRACE + extra)})
    trace = check_trace(text, max_bytes=MAX_TRACE)
    assert (trace.value, trace.problem) == (None, TraceProblem.TOO_LARGE)


@PROPERTY_SETTINGS
@given(tags=st.dictionaries(st.sampled_from([*UTM_KEYS, "gclid", "UTM_SOURCE"]), JSON_VALUES))
def test_utm_tags_are_read_as_written(tags: dict[str, Any]) -> None:
    trace = check_trace(json.dumps({"tags": {"list": tags}}), max_bytes=1 << 20)
    assert set(trace.utm) <= set(UTM_KEYS)
    for key, value in trace.utm.items():
        assert isinstance(value, str)
        if isinstance(tags[key], str):
            assert value == tags[key]  # case and spacing kept exactly
