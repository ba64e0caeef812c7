"""The `batch` method (docs/bitrix24.md §5): up to 50 `method?query` commands run in order, with
`$result[...]` back-references substituted as the server does, `halt`, and per-command results and
errors. It holds no state: each command goes back through the dispatcher it is given.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

from app.sandbox.errors import batch_length_exceeded, batch_method_not_allowed
from app.sandbox.params import Params, as_array, is_php_numeric, is_truthy, param
from app.sandbox.phpquery import PhpArray, parse_str

MAX_COMMANDS = 50

Execute = Callable[[str, Params], tuple[int, dict[str, object]]]

# The path of a reference: `[key]` segments, any text but `]` inside (server: CRestUtil::
# processBatchElement, preg_match_all("/\\[([^\\]]+)\\]/")).
_PATH_KEY = re.compile(r"\[([^\]]+)\]")
# PCRE's \s without the /u flag: the reference runs to the next ASCII whitespace.
_NOT_SPACE = r"[^ \t\n\r\v\f]*"
_INT_KEY = re.compile(r"-?[0-9]+")
_MISSING = object()

_RESPONSE_SECTIONS = (
    ("result", "result"),
    ("result_error", "error"),
    ("result_total", "total"),
    ("result_next", "next"),
    ("result_time", "time"),
)


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
    """The batch `result`: the five maps of §5.3 (PHP-JSON shaping is the caller's job).

    Server: rest/classes/general/rest_provider.php CRestProvider::methodsBatch. `results` is its
    $arResult: every key of a command's answer is filed under the command key (`result`, `time`,
    `total`, `next`; a failure files `error` and `error_description`), and those section names
    are what later commands may reference.
    """
    halt = is_truthy(param(params, "halt"))
    results: dict[str, dict[str, object]] = {
        "result": {},
        "next": {},
        "total": {},
        "time": {},
        "error": {},
    }
    for index, (key, command) in enumerate(commands_of(params)):
        if index >= MAX_COMMANDS:
            status, body = 400, batch_length_exceeded().body()
        elif not isinstance(command, str):
            continue  # `if (!is_string($call)) continue;`: counted, never answered
        else:
            method, query = split_command(command)
            if method == "batch":
                status, body = 405, batch_method_not_allowed().body()
            else:
                status, body = execute(method, parse_batch_query(query, results))
        if status == 200:
            for name in ("result", "time", "total", "next"):
                if name in body:
                    results.setdefault(name, {})[key] = body[name]
        else:
            # The sub-call's HTTP status is not reported (§5.3).
            error = {
                "error": body.get("error", ""),
                "error_description": body.get("error_description", ""),
            }
            results.setdefault("error", {})[key] = error
            results.setdefault("error_description", {})[key] = error["error_description"]
            if halt:
                break
    return {answer: dict(results.get(name, {})) for answer, name in _RESPONSE_SECTIONS}


def parse_batch_query(query: str, results: dict[str, dict[str, object]]) -> Params:
    """A command's parameters: `parse_str` first, then back-references substituted in every
    decoded value and key (docs/bitrix24.md §0 fact 16, §5.2; server: rest/classes/general/
    rest_util.php CRestUtil::ParseBatchQuery). So a submitted value that contains `$result[x]`
    (or `$next`, `$total`, `$time`, `$error`, once a command failed `$error_description`) is
    rewritten even when it was percent-encoded: clients must not send such text in a batch."""
    if not query:
        return {}
    return _substitute_structure(parse_str(query), results, None)


def _substitute_structure(
    params: PhpArray, results: dict[str, dict[str, object]], sections: str | None
) -> dict[str, object]:
    """CRestUtil::processBatchStructure: values with the section names as they are when the
    command is parsed; keys with an empty section list (the server omits it for keys)."""
    out: dict[str, object] = {}
    for key, value in params.items():
        if sections is None:
            sections = "|".join(results)
        new_key = _php_key(_substitute_element(key, results, ""))
        if new_key is None:
            continue  # an array as an array key: PHP's "Illegal offset type", nothing stored
        if isinstance(value, dict):
            out[new_key] = _substitute_structure(value, results, sections)
        else:
            out[new_key] = _substitute_element(value, results, sections)
    return out


def _substitute_element(text: str, results: dict[str, dict[str, object]], sections: str) -> object:
    """CRestUtil::processBatchElement on one decoded value.

    The pattern is `/\\$(SECTIONS)([^\\s]*)/i`: a reference runs to the next whitespace, so text
    glued to it (`$result[a],x`) is part of the match and replaced with it. The section is looked
    up with the case as written (`$RESULT[a]` matches but finds nothing). The path is walked
    while `isset($r[$key])`; where it ends, what was reached is used. A match that is the whole
    value becomes that raw value (an int, a whole map, null). An embedded one is replaced only by
    a number or a string; an array leaves the reference text as it was.
    """
    pattern = re.compile(r"\$(" + sections + r")(" + _NOT_SPACE + ")", re.IGNORECASE)
    current: object = text
    for match in list(pattern.finditer(text)):
        path = _PATH_KEY.findall(match.group(2))
        if not path:
            continue
        resolved: object = results.get(match.group(1))
        for key in path:
            child = _isset_index(resolved, key)
            if child is _MISSING:
                break
            resolved = child
        if match.group(0) == current:
            current = copy.deepcopy(resolved)
            continue
        if is_php_numeric(resolved):
            resolved = _php_number_string(resolved)
        if not isinstance(resolved, str) or not isinstance(current, str):
            continue
        current = current.replace(match.group(0), resolved)
    return current


def _isset_index(value: object, key: str) -> object:
    """`isset($value[$key]) ? $value[$key] : missing` for PHP arrays (dicts, lists) and strings."""
    if isinstance(value, dict):
        child = value.get(key)
        if child is None and _INT_KEY.fullmatch(key):
            child = value.get(int(key))
        return _MISSING if child is None else child
    if isinstance(value, list | str) and _INT_KEY.fullmatch(key):
        index = int(key)
        if -len(value) <= index < len(value) and not (isinstance(value, list) and index < 0):
            child = value[index]
            return _MISSING if child is None else child
    return _MISSING


def _php_number_string(value: object) -> str:
    """PHP's `(string)` of a number: 5 → "5", 2.0 → "2", 1.5 → "1.5"; numeric strings as is."""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _php_key(value: object) -> str | None:
    """A substituted key as PHP stores it: null → "", numbers as text, arrays refused."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else ""
    if isinstance(value, int | float | str):
        return _php_number_string(value) if not isinstance(value, str) else value
    return None
