"""Reading REST parameters as the PHP server sees them: legacy crm.* resolve top-level names in
several cases (docs/bitrix24.md §1.2), and PHP arrays arrive as JSON lists/objects or as
bracket-parsed dicts keyed "0".."n".
"""

from __future__ import annotations

import re
from collections.abc import Mapping

Params = Mapping[str, object]

_PHP_NUMERIC = re.compile(r"\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*")
_INTEGER = re.compile(r"\s*[+-]?[0-9]+\s*")


def param(params: Params, name: str) -> object | None:
    """CCrmRestHelper::resolveParam: the name as written, UPPER, lower or Capitalized."""
    for variant in (name, name.upper(), name.lower(), name[:1].upper() + name[1:].lower()):
        if variant in params:
            return params[variant]
    return None


def as_array(value: object) -> dict[str, object] | None:
    """A PHP array (JSON object, JSON list or bracket-parsed dict) as a dict; None for scalars."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return None


def as_list(value: object) -> list[object] | None:
    """The values of a PHP array in order (what `foreach` sees); None for scalars."""
    array = as_array(value)
    return None if array is None else list(array.values())


def as_int(value: object) -> int | None:
    """An integer from an int or a decimal string ("5", " 5"); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    return None


def is_php_numeric(value: object) -> bool:
    """PHP `is_numeric`: ints, floats and numeric strings ("12", "1.5", "1e3", " 7")."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and _PHP_NUMERIC.fullmatch(value) is not None


def is_truthy(value: object) -> bool:
    """Bitrix flags: 1, "1", true, "Y"/"y", "true" are on; everything else is off."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value != 0
    return isinstance(value, str) and value.strip().lower() in {"1", "y", "true"}


def php_string(value: object) -> str:
    """PHP's string conversion, used where a value is embedded in text (§5.2)."""
    if value is None or value is False:
        return ""
    if value is True:
        return "1"
    if isinstance(value, dict | list):
        return "Array"
    return str(value)
