"""Legacy list semantics (docs/bitrix24.md §2.2, §7.1): filter keys with operator prefixes (keys
naming no field of the entity dropped, §0 fact 13), `order`, and fixed pages of 50 with
`total`/`next`, where `start=-1` skips the count. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from app.sandbox.entities import Record
from app.sandbox.errors import RestError
from app.sandbox.params import as_array, as_int, as_list

PAGE_SIZE = 50

# Longest first, so that `>=` is not read as `>` plus a field named `=X`.
_OPERATORS = ("!@", "!=", "!%", ">=", "<=", "=%", "%=", "@", "=", "!", ">", "<", "%")


@dataclass(frozen=True)
class Page:
    """A list method's answer: the rows, plus `total` and `next` beside `result` (§2.2)."""

    rows: list[Record]
    total: int | None = None
    next: int | None = None


@dataclass(frozen=True)
class Condition:
    field: str
    operator: str
    value: object

    def matches(self, record: Record) -> bool:
        stored = _stored_values(record.get(self.field))
        op = self.operator
        if op in ("", "="):
            return _any_equal(stored, self.value)
        if op in ("!", "!="):
            return not _any_equal(stored, self.value)
        if op == "@":
            return _any_equal(stored, _as_values(self.value))
        if op == "!@":
            return not _any_equal(stored, _as_values(self.value))
        if op in ("%", "!%"):
            needle = _text(self.value).casefold()
            found = any(needle in _text(s).casefold() for s in stored)
            return found if op == "%" else not found
        if op in ("=%", "%="):
            pattern = _like(_text(self.value))
            return any(pattern.fullmatch(_text(s)) for s in stored)
        return any(_compare(s, self.value, op) for s in stored)


# Reference types the server never filters by LIKE: `%X`, `%=X`, `=%X` become `=X`
# (docs/bitrix24.md §7.1; server: CCrmRestProxyBase::internalizeFilterFields).
_NO_LIKE_TYPES = ("crm_status", "crm_company", "crm_contact")


def parse_filter(raw: object, fields: Mapping[str, str] | None = None) -> list[Condition]:
    """The conditions of a `filter`; with `fields` (code -> type: the entity's catalogue, its
    multifields and the portal's custom fields) a key whose name after the operator prefix is not
    a field is dropped silently, so the list matches every row (docs/bitrix24.md §0 fact 13;
    server: CCrmRestProxyBase::internalizeFilterFields, CSqlUtil::GetFilterOperation: unknown
    field -> unset($filter[$k])). Without `fields` every key is kept (crm.status.list)."""
    if raw is None or raw == "":
        return []
    array = as_array(raw)
    if array is None:
        raise RestError(400, "ERROR_ARGUMENT", "Argument 'filter' must be array.")
    conditions: list[Condition] = []
    for key, value in array.items():
        operator = next((op for op in _OPERATORS if key.startswith(op)), "")
        name = key[len(operator) :].strip()
        if not name:
            continue
        if fields is not None:
            kind = fields.get(name)
            if kind is None:
                continue
            if kind in _NO_LIKE_TYPES and operator in ("%", "%=", "=%"):
                operator = "="
        conditions.append(Condition(name, operator, value))
    return conditions


def parse_select(raw: object) -> list[str]:
    items = as_list(raw)
    if items is None:
        items = [raw] if isinstance(raw, str) and raw else []
    names = [str(item).strip() for item in items if isinstance(item, str | int)]
    return [n for n in names if n] or ["*"]


def parse_start(raw: object) -> int:
    start = as_int(raw)
    if start is None or (start < 0 and start != -1):
        return 0
    return start


def sort_records(records: list[Record], raw_order: object) -> list[Record]:
    order = as_array(raw_order) or {}
    keys: list[tuple[str, bool]] = [
        (name.strip(), str(direction).strip().upper() == "DESC")
        for name, direction in order.items()
        if name.strip()
    ]
    result = sorted(records, key=lambda r: _sort_key(r.get("ID")))  # ID ASC breaks ties
    for name, descending in reversed(keys):
        result.sort(key=_by(name), reverse=descending)
    return result


def paginate(rows: list[Record], start: int) -> Page:
    """50 rows from `start`; `total` and `next` unless `start` is -1 (§2.2)."""
    if start == -1:
        return Page(rows[:PAGE_SIZE])
    page = rows[start : start + PAGE_SIZE]
    following = start + PAGE_SIZE
    return Page(page, total=len(rows), next=following if following < len(rows) else None)


def select_rows(records: Sequence[Record], conditions: Sequence[Condition]) -> list[Record]:
    return [r for r in records if all(c.matches(r) for c in conditions)]


# --- value comparison ---------------------------------------------------------------------------


def _stored_values(value: object) -> list[object]:
    """Multifields and id lists match when any of their values does."""
    if isinstance(value, list):
        return [item.get("VALUE") if isinstance(item, dict) else item for item in value] or [None]
    return [value]


def _as_values(value: object) -> list[object]:
    items = as_list(value)
    return items if items is not None else [value]


def _any_equal(stored: list[object], wanted: object) -> bool:
    wanted_values = _as_values(wanted) if isinstance(wanted, list | dict) else [wanted]
    return any(_equal(s, w) for s in stored for w in wanted_values)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Y" if value else "N"
    return str(value)


def _equal(stored: object, wanted: object) -> bool:
    a, b = _number(stored), _number(wanted)
    if a is not None and b is not None:
        return a == b
    # MySQL's default collations compare strings case-insensitively; NULL filters like "".
    return _text(stored).casefold() == _text(wanted).casefold()


def _compare(stored: object, wanted: object, op: str) -> bool:
    if stored is None:
        return False
    a, b = _number(stored), _number(wanted)
    if a is not None and b is not None:
        sign = (a > b) - (a < b)
    else:
        x, y = _text(stored).casefold(), _text(wanted).casefold()
        sign = (x > y) - (x < y)
    return {">": sign > 0, ">=": sign >= 0, "<": sign < 0, "<=": sign <= 0}[op]


def _like(pattern: str) -> re.Pattern[str]:
    parts = ("." if ch == "_" else ".*" if ch == "%" else re.escape(ch) for ch in pattern)
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL)


def _sort_key(value: object) -> tuple[int, float, str]:
    if value is None or value == "":
        return (0, 0.0, "")  # NULLs first in ascending order, as MySQL sorts them
    number = _number(value)
    if number is not None:
        return (1, number, "")
    return (2, 0.0, _text(value).casefold())


def _by(name: str) -> Callable[[Record], tuple[int, float, str]]:
    def key(record: Record) -> tuple[int, float, str]:
        values = _stored_values(record.get(name))
        return _sort_key(values[0] if values else None)

    return key
