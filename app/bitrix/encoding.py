"""Encodes parameters as a batch command's query string (PHP bracket syntax, §1.2 and §5.1).

Every value is percent-encoded once, so `+` in a phone number arrives as `+`, not a space;
`Ref` values (`$result[cmd]` back-references, §5.2) are written literally.

§ numbers refer to the sections of docs/bitrix24.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class Ref:
    """A back-reference to an earlier command's result in the same batch: `$result[cmd]...`."""

    command: str
    path: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"$result[{self.command}]" + "".join(f"[{p}]" for p in self.path)


def encode_params(params: Mapping[str, object]) -> str:
    pairs: list[str] = []

    def walk(key: str, value: object) -> None:
        if isinstance(value, Mapping):
            for sub, item in value.items():
                walk(f"{key}[{sub}]", item)
        elif isinstance(value, Sequence) and not isinstance(value, str | bytes):
            for index, item in enumerate(value):
                walk(f"{key}[{index}]", item)
        elif isinstance(value, Ref):
            pairs.append(f"{quote(key, safe='[]')}={value}")
        else:
            pairs.append(f"{quote(key, safe='[]')}={quote(_scalar(value), safe='')}")

    for name, value in params.items():
        walk(name, value)
    return "&".join(pairs)


def command(method: str, params: Mapping[str, object]) -> str:
    """One batch command: `method?query`."""
    return f"{method}?{encode_params(params)}"


def _scalar(value: object) -> str:
    if value is None:
        return ""
    if value is True:
        return "Y"
    if value is False:
        return "N"
    return str(value)
