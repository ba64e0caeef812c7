"""Checks a visitor's Sales Intelligence trace (the getTrace() string) and reads its UTM tags.

Pure: no I/O. A valid trace is passed on byte for byte, never rewritten (docs/bitrix24.md §8.1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum

UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
DEFAULT_MAX_TRACE_BYTES = 64 * 1024
# The largest id the portal can read (PHP_INT_MAX); longer digit strings are not ids.
MAX_TRACE_ID = 2**63 - 1


class TraceProblem(StrEnum):
    """Why a trace that arrived is not sent to the portal (the submission is still accepted)."""

    NOT_JSON = "trace_not_json"
    """The string does not parse as JSON."""
    NOT_OBJECT = "trace_not_object"
    """It parses, but to something other than an object or a trace id (1 to 2**63-1)."""
    TOO_LARGE = "trace_too_large"
    """Larger than the size cap."""
    ID_NOT_ALLOWED = "trace_id_not_allowed"
    """A trace id (a positive integer) on a form that does not opt in with `trace_ids`."""


@dataclass(frozen=True, slots=True)
class Trace:
    """What the gateway does with one submitted trace.

    `value` is what goes into TRACE: the original JSON string, unmodified, or the decimal id of
    an existing trace; None when there is nothing to send. `problem` says why a trace that
    arrived is not sent. `utm` holds the five UTM tags found in `tags.list`, values as written.
    """

    value: str | None = None
    is_id: bool = False
    problem: TraceProblem | None = None
    utm: dict[str, str] = field(default_factory=dict)


def check_trace(
    raw: object, *, allow_ids: bool = False, max_bytes: int = DEFAULT_MAX_TRACE_BYTES
) -> Trace:
    """Classify a trace as it arrived: a string from a form, or any JSON value from a JSON body.

    A positive integer (a JSON number, or a string of digits) is the id of an existing trace.
    getTrace() never returns one, and a numeric TRACE links the record to that trace (ids are
    sequential), so an id is sent only when `allow_ids` (the form's `trace_ids` option).
    """
    if raw is None or raw == "":
        return Trace()
    if isinstance(raw, bool):
        return Trace(problem=TraceProblem.NOT_OBJECT)
    if isinstance(raw, int):
        return _trace_id(raw, allow_ids=allow_ids)
    if isinstance(raw, dict):
        # A JSON body may carry the trace as an object; serialise it compactly (docs/design.md).
        text = json.dumps(raw, ensure_ascii=False, separators=(",", ":"))
        return _from_object(text, raw, max_bytes)
    if not isinstance(raw, str):
        return Trace(problem=TraceProblem.NOT_OBJECT)
    stripped = raw.strip()
    if not stripped:
        return Trace()
    if stripped.isascii() and stripped.isdigit():
        # Bounded before int(): Python refuses to convert more than 4300 digits.
        number = int(stripped) if len(stripped) <= len(str(MAX_TRACE_ID)) else 0
        return _trace_id(number, allow_ids=allow_ids)
    if len(raw.encode("utf-8")) > max_bytes:
        return Trace(problem=TraceProblem.TOO_LARGE)
    try:
        parsed = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return Trace(problem=TraceProblem.NOT_JSON)
    if not isinstance(parsed, dict):
        return Trace(problem=TraceProblem.NOT_OBJECT)
    return Trace(value=raw, utm=utm_from_trace(parsed))


def _trace_id(number: int, *, allow_ids: bool) -> Trace:
    if not 0 < number <= MAX_TRACE_ID:
        return Trace(problem=TraceProblem.NOT_OBJECT)
    if not allow_ids:
        return Trace(problem=TraceProblem.ID_NOT_ALLOWED)
    return Trace(value=str(number), is_id=True)


def _reject_constant(name: str) -> object:
    # Python reads NaN and Infinity; PHP's json_decode does not, so the portal would drop
    # such a trace silently (docs/bitrix24.md §8.2): treat it as not JSON.
    raise ValueError(f"{name} is not JSON")


def _from_object(text: str, parsed: dict[str, object], max_bytes: int) -> Trace:
    if len(text.encode("utf-8")) > max_bytes:
        return Trace(problem=TraceProblem.TOO_LARGE)
    return Trace(value=text, utm=utm_from_trace(parsed))


def utm_from_trace(parsed: dict[str, object]) -> dict[str, str]:
    """The UTM tags of `tags.list`, non-empty strings only, case kept exactly
    (docs/bitrix24.md §6.4, §8.2)."""
    tags = parsed.get("tags")
    if not isinstance(tags, dict):
        return {}
    tag_list = tags.get("list")
    # An empty PHP map arrives as [] (docs/bitrix24.md §5.3); anything but an object holds
    # no tags.
    if not isinstance(tag_list, dict):
        return {}
    utm: dict[str, str] = {}
    for key in UTM_KEYS:
        value = tag_list.get(key)
        if isinstance(value, str) and value.strip():
            utm[key] = value
        elif isinstance(value, int | float) and not isinstance(value, bool):
            utm[key] = str(value)
    return utm


def utm_only_trace(utm: dict[str, str]) -> str:
    """A trace of just the UTM tags, for when the portal rejects the original
    (docs/bitrix24.md §8.4)."""
    return json.dumps({"tags": {"list": utm}}, ensure_ascii=False, separators=(",", ":"))
