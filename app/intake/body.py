"""Reads and parses a submission body: urlencoded, multipart or JSON, within a size limit.

Produces flat fields (name -> values) plus the raw trace value; every failure is a `BodyError`
carrying the HTTP status the client gets (400, 413, 415, 422). Never raises anything else:
whatever the client chooses (the charset, the size and kind of numbers, the nesting, the bytes
themselves) ends in a parsed body or a `BodyError`, and the parsed text is always storable
(valid Unicode without lone surrogates, no NUL).
"""

from __future__ import annotations

import codecs
import json
import math
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect, Request

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON_TYPE = "application/json"
MAX_FIELDS = 100
MAX_FIELD_CHARS = 10_000
MAX_NAME_CHARS = 100
# Repeated names (checkbox groups, several phones) are fine; thousands of them are not a form.
MAX_VALUES_PER_FIELD = 50
# A form is flat; a trace object is a few levels deep. Deeper JSON is no submission, and the
# portal's json_decode stops at 512 levels anyway.
MAX_JSON_DEPTH = 32


class BodyError(Exception):
    """The body cannot be accepted; `status` is the answer, `errors` names fields (422)."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or {}


@dataclass(slots=True)
class ParsedBody:
    kind: str
    fields: dict[str, list[str]] = field(default_factory=dict)
    trace: object = None
    raw: bytes = b""


def media_type(request: Request) -> tuple[str, dict[str, str]]:
    header = request.headers.get("content-type", "")
    main, _, rest = header.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return main.strip().lower(), params


def check_headers(request: Request) -> str:
    """The body kind, or BodyError(415) for an encoded body or a type we do not take."""
    if request.headers.get("content-encoding", "").strip():
        raise BodyError(415, "Content-Encoding is not supported; send the body uncompressed")
    kind, _ = media_type(request)
    if kind not in (URLENCODED, MULTIPART, JSON_TYPE) and not kind.endswith("+json"):
        raise BodyError(
            415,
            "unsupported Content-Type; use application/x-www-form-urlencoded, "
            "multipart/form-data or application/json",
        )
    return JSON_TYPE if kind.endswith("+json") else kind


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyError(413, f"the body is larger than {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BodyError(413, f"the body is larger than {limit} bytes")
            chunks.append(chunk)
    except ClientDisconnect:
        # The client went away mid-body (or sent chunked framing the server gave up on):
        # nothing to store and nobody to answer, but no server error either.
        raise BodyError(400, "the body was cut off before its end") from None
    return b"".join(chunks)


async def parse_body(request: Request, *, limit: int) -> ParsedBody:
    kind = check_headers(request)
    raw = await read_limited(request, limit)
    if kind == JSON_TYPE:
        parsed = _parse_json(raw)
    elif kind == URLENCODED:
        parsed = _parse_urlencoded(raw, _charset(request))
    else:
        parsed = await _parse_multipart(request, raw)
    parsed.raw = raw
    _check_text(parsed)
    _check_sizes(parsed.fields)
    return parsed


def _charset(request: Request) -> str:
    _, params = media_type(request)
    charset = params.get("charset", "utf-8")
    try:
        name = codecs.lookup(charset).name
    except LookupError:
        raise BodyError(415, f"unsupported charset {charset[:40]!r}") from None
    try:
        # codecs also knows bytes-to-bytes transforms (base64, zlib, rot13...): decoding
        # with one raises LookupError (empty input would skip the check, hence one byte).
        b"a".decode(name)
    except LookupError:
        raise BodyError(415, f"unsupported charset {charset[:40]!r}") from None
    except ValueError:
        pass  # a text encoding that cannot decode "a" alone (utf-16): judged on the body
    return name


def _parse_urlencoded(raw: bytes, charset: str) -> ParsedBody:
    try:
        text = raw.decode("ascii") if charset != "utf-8" else raw.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, encoding=charset, errors="strict")
    except (UnicodeError, ValueError, LookupError):
        raise BodyError(400, f"the body is not valid {charset} form data") from None
    body = ParsedBody(kind=URLENCODED)
    for name, value in pairs:
        _add(body, name, value)
    return body


async def _parse_multipart(request: Request, raw: bytes) -> ParsedBody:
    boundary = media_type(request)[1].get("boundary", "")
    # The parser quietly drops a part cut off mid-way; a body without its closing
    # delimiter was truncated in transit, so refuse it rather than store half a form.
    if not boundary or f"--{boundary}--".encode("latin-1", "replace") not in raw:
        raise BodyError(400, "the body is not valid multipart/form-data (truncated?)")
    # Starlette's form parser reads the cached body (the size limit has been applied already).
    request._body = raw
    try:
        form = await request.form(max_files=10, max_fields=MAX_FIELDS * 2)
    except Exception:  # truncated or malformed multipart, bad boundary, bad encoding
        raise BodyError(400, "the body is not valid multipart/form-data") from None
    body = ParsedBody(kind=MULTIPART)
    try:
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                if value.filename or (value.size or 0) > 0:
                    raise BodyError(
                        422, "file uploads are not accepted", {name: "files are not accepted"}
                    )
                continue
            _add(body, name, value)
    finally:
        await form.close()
    try:
        # Starlette decodes a part that is not UTF-8 as Latin-1 without a word; with no file
        # parts left, every byte is field text, so the body as a whole must be UTF-8.
        raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BodyError(400, "the body is not valid UTF-8 multipart/form-data") from None
    return body


class _JsonRefused(ValueError):
    """JSON that parses in Python but is no submission; the message is the client's answer."""


def _parse_json(raw: bytes) -> ParsedBody:
    try:
        data = json.loads(
            raw.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
        # `\ud800` escapes decode to lone surrogates, which are not text: nothing could
        # store, hash or forward them as UTF-8.
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except _JsonRefused as exc:
        raise BodyError(400, str(exc)) from None
    except (UnicodeError, ValueError, RecursionError):
        raise BodyError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BodyError(400, "the JSON body must be an object of fields")
    if _depth(data) > MAX_JSON_DEPTH:
        raise BodyError(400, f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    body = ParsedBody(kind=JSON_TYPE)
    errors: dict[str, str] = {}
    for name, value in data.items():
        if name == "trace":
            body.trace = value  # an object, a string or a trace id: trace.check_trace decides
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if item is None:
                continue
            if isinstance(item, dict | list):
                errors[name] = "must be a string, a number or a list of them"
                break
            _add(body, name, _scalar(item))
    if errors:
        raise BodyError(422, "some fields are invalid", errors)
    return body


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    # Two parsers (a proxy's, ours) could each take a different one of two equal keys.
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _JsonRefused("the JSON body repeats a key in one object")
    return result


def _no_constant(name: str) -> object:
    # NaN and Infinity are Python's extension, not JSON; nothing downstream reads them.
    raise _JsonRefused(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _JsonRefused("a number in the JSON body is out of range")
    return value


def _depth(data: object) -> int:
    """How deeply `data` nests (an iterative walk: the depth is the client's to choose)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            items: list[object] = list(item.values())
        elif isinstance(item, list):
            items = item
        else:
            continue
        deepest = max(deepest, level)
        if level > MAX_JSON_DEPTH:
            break
        stack.extend((child, level + 1) for child in items)
    return deepest


def _scalar(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def _add(body: ParsedBody, name: str, value: str) -> None:
    name = name.strip()
    if not name:
        return
    if name == "trace" and body.kind != JSON_TYPE:
        # Forms carry one trace; the first non-empty one counts.
        if not body.trace:
            body.trace = value
        return
    body.fields.setdefault(name, []).append(value)


def _check_text(body: ParsedBody) -> None:
    """400 unless every name and value is text UTF-8 can carry.

    A declared charset's decoder (utf-7, unicode-escape...) can produce lone surrogates, which
    no database, hash or portal takes.
    """
    texts = [*body.fields, *(v for values in body.fields.values() for v in values)]
    if isinstance(body.trace, str):
        texts.append(body.trace)
    try:
        for text in texts:
            text.encode("utf-8")
    except UnicodeEncodeError:
        raise BodyError(400, "the body holds text that is not valid Unicode") from None


def _check_sizes(fields: dict[str, list[str]]) -> None:
    if len(fields) > MAX_FIELDS:
        raise BodyError(422, f"too many fields (at most {MAX_FIELDS})", {"*": "too many fields"})
    errors: dict[str, str] = {}
    for name, values in fields.items():
        if len(name) > MAX_NAME_CHARS:
            errors[name[:MAX_NAME_CHARS]] = (
                f"field names are limited to {MAX_NAME_CHARS} characters"
            )
        elif "\x00" in name:
            errors[name.replace("\x00", "")] = "a field name contains a NUL character"
        elif len(values) > MAX_VALUES_PER_FIELD:
            errors[name] = f"more than {MAX_VALUES_PER_FIELD} values"
        elif any(len(v) > MAX_FIELD_CHARS for v in values):
            errors[name] = f"longer than {MAX_FIELD_CHARS} characters"
        elif "\x00" in "".join(values):
            errors[name] = "contains a NUL character"
    if errors:
        raise BodyError(422, "some fields are invalid", errors)
