"""The `batch` method (bitrix24-api.md §5): up to 50 `method?query` commands run in order, with
`$result[...]` back-references, `halt`, and per-command results and errors. It holds no state:
each command goes back through the dispatcher it is given.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

from app.sandbox.errors import batch_length_exceeded, batch_method_not_allowed
from app.sandbox.params import Params, as_array, is_truthy, param, php_string
from app.sandbox.phpquery import PhpArray, PhpValue, parse_str

MAX_COMMANDS = 50

Execute = Callable[[str, Params], tuple[int, dict[str, object]]]

# `$result[cmd]`, `$result[cmd][FIELD][0]`, and the $next/$total/$time/$error variants (§5.2).
_REFERENCE = re.compile(r"\$(result|next|total|time|error)((?:\[[^\[\]]*\])+)", re.IGNORECASE)
_PATH_KEY = re.compile(r"\[([^\[\]]*)\]")
_SECTIONS = {
    "result": "result",
    "next": "result_next",
    "total": "result_total",
    "time": "result_time",
    "error": "result_error",
}


_RESPONSE_ORDER = ("result", "result_error", "result_total", "result_next", "result_time")


def normalise_method(name: str) -> str:
    """Method names are case-insensitive and may carry a `.json` suffix (§1.1)."""
    method = name.strip().strip("/").lower()
    return method.removesuffix(".json")


def split_command(command: object) -> tuple[str, str]:
    """`crm.lead.add?fields[TITLE]=x` → ("crm.lead.add", "fields[TITLE]=x")."""
    if not isinstance(command, str):
        return "", ""
    method, _, query = command.partition("?")
    return normalise_method(method), query


def commands_of(params: Params) -> list[tuple[str, object]]:
    """The (key, command) pairs of `cmd`: an object, or a list keyed 0..n-1 (§5.1)."""
    array = as_array(param(params, "cmd"))
    return list(array.items()) if array is not None else []


def run_batch(params: Params, execute: Execute) -> dict[str, object]:
    """The batch `result`: the five maps of §5.3 (PHP-JSON shaping is the caller's job)."""
    halt = is_truthy(param(params, "halt"))
    sections: dict[str, dict[str, object]] = {name: {} for name in _RESPONSE_ORDER}
    results, errors = sections["result"], sections["result_error"]
    for index, (key, command) in enumerate(commands_of(params)):
        if index >= MAX_COMMANDS:
            status, body = 400, batch_length_exceeded().body()
        else:
            method, query = split_command(command)
            if method == "batch":
                status, body = 405, batch_method_not_allowed().body()
            else:
                status, body = execute(method, _substitute_all(parse_str(query), sections))
        if status == 200:
            results[key] = body.get("result")
            for name, section in (("total", "result_total"), ("next", "result_next")):
                if name in body:
                    sections[section][key] = body[name]
            sections["result_time"][key] = body.get("time")
        else:
            # The sub-call's HTTP status is not reported (§5.3).
            errors[key] = {
                "error": body.get("error", ""),
                "error_description": body.get("error_description", ""),
            }
            if halt:
                break
    return dict(sections)


def _substitute_all(params: PhpArray, sections: dict[str, dict[str, object]]) -> Params:
    return {key: _substitute(value, sections) for key, value in params.items()}


def _substitute(value: PhpValue, sections: dict[str, dict[str, object]]) -> object:
    """Replace back-references in every parsed value (§5.2).

    A whole-value reference becomes the raw value (an int, or a whole map); one embedded in text
    is stringified (arrays as "Array"). A reference to a failed or missing command is not an
    error: the walk stops where the path ends, leaving garbage such as the whole result map.
    """
    if isinstance(value, dict):
        return {key: _substitute(item, sections) for key, item in value.items()}
    whole = _REFERENCE.fullmatch(value)
    if whole is not None:
        return _resolve(whole, sections)
    return _REFERENCE.sub(lambda match: php_string(_resolve(match, sections)), value)


def _resolve(match: re.Match[str], sections: dict[str, dict[str, object]]) -> object:
    current: object = sections[_SECTIONS[match.group(1).lower()]]
    for key in _PATH_KEY.findall(match.group(2)):
        # PHP: `if (isset($r[$key])) $r = $r[$key]; else break;` (CRestUtil::processBatchElement)
        array = as_array(current)
        if array is None or array.get(key) is None:
            break
        current = array[key]
    return copy.deepcopy(current)
