"""PHP `parse_str` semantics for form bodies, query strings and batch commands (docs/bitrix24.md
§1.2, §5.1): `+` is a space, `%2B` a plus, `a[b][c]=1` nests, `a[]=x` appends. Parsing only.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeAlias
from urllib.parse import unquote_plus

PhpValue: TypeAlias = "str | dict[str, PhpValue]"
PhpArray: TypeAlias = dict[str, PhpValue]

# Keys PHP stores as integers ("0", "17", "-3"; not "01" or "+1"); `[]` appends after the largest.
_INT_KEY = re.compile(r"0|-?[1-9][0-9]*")


def parse_str(query: str) -> PhpArray:
    """Decode an `application/x-www-form-urlencoded` string the way PHP's `parse_str` does."""
    pairs: list[tuple[str, str]] = []
    for chunk in query.split("&"):
        if not chunk:
            continue
        name, _, value = chunk.partition("=")
        pairs.append((unquote_plus(name), unquote_plus(value)))
    return parse_pairs(pairs)


def parse_pairs(pairs: Iterable[tuple[str, str]]) -> PhpArray:
    """Build the PHP array from already-decoded (name, value) pairs, e.g. multipart fields."""
    result: PhpArray = {}
    for name, value in pairs:
        path = split_name(name)
        if path is not None:
            _assign(result, *path, value)
    return result


def split_name(name: str) -> tuple[str, list[str | None]] | None:
    """`a[b][]` → ("a", ["b", None]) (None = append); None when PHP drops the variable.

    Mirrors php_register_variable_ex: leading spaces are skipped; in the base name spaces and dots
    become `_`; an unterminated first `[` becomes `_` too; text after a closing `]` that does not
    open another `[` is ignored.
    """
    name = name.lstrip(" ")
    bracket = name.find("[")
    if bracket < 0:
        base = _mangle(name)
        return (base, []) if base else None
    base = _mangle(name[:bracket])
    if not base:
        return None
    keys: list[str | None] = []
    pos = bracket
    while pos < len(name) and name[pos] == "[":
        close = name.find("]", pos + 1)
        if close < 0:
            if not keys:
                return base + "_" + name[bracket + 1 :], []
            break
        index = name[pos + 1 : close]
        keys.append(index if index else None)
        pos = close + 1
    return base, keys


def _mangle(base: str) -> str:
    return base.replace(" ", "_").replace(".", "_")


def _assign(root: PhpArray, base: str, keys: list[str | None], value: str) -> None:
    container, key = root, base
    for index in keys:
        child = container.get(key)
        if not isinstance(child, dict):
            # PHP replaces a scalar with an array when brackets follow it.
            child = {}
            container[key] = child
        container, key = child, (index if index is not None else str(_next_index(child)))
    container[key] = value


def _next_index(array: PhpArray) -> int:
    ints = [int(k) for k in array if _INT_KEY.fullmatch(k)]
    return max(max(ints) + 1, 0) if ints else 0
