"""Makes `embed.min.js` (what `/embed.js` serves) from the readable `embed.js` beside it.

A deliberately small minifier for that one file: it drops comments and the whitespace no token
needs, and gives the names the script declares (`const`, `let`, arrow parameters) short ones.
It knows strings, but not regular expression or template literals, automatic semicolon
insertion, or shorthand properties (`{a}`), so the source uses none of them.
Run `python -m app.embed.minify` after editing embed.js; a test keeps the two files in sync.
"""

from __future__ import annotations

import itertools
import re
import string
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "embed.js"
MINIFIED = HERE / "embed.min.js"

_TOKEN = re.compile(
    r"""(?P<space>\s+)|(?P<comment>//[^\n]*|/\*.*?\*/)|(?P<string>'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*")
    |(?P<word>[A-Za-z_$][\w$]*)|(?P<number>\d[\w.]*)|(?P<punct>=>|[^\sA-Za-z0-9_$'"`])""",
    re.DOTALL | re.VERBOSE,
)
# Reserved words, and contextual ones (get, set, of, ...): never renamed, never given.
_RESERVED = """as break case catch class const continue debugger default delete do else export
extends false finally for function if import in instanceof let new null of return super switch this
throw true try typeof var void while with yield await async static get set"""
_KEYWORDS = frozenset(_RESERVED.split())


class MinifyError(ValueError):
    """The source uses something this minifier does not handle."""


def _tokens(source: str) -> list[str]:
    """The code's tokens, without comments and whitespace."""
    tokens: list[str] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if match is None:
            raise MinifyError(f"cannot read the source at offset {pos}: {source[pos : pos + 20]!r}")
        if match.lastgroup not in ("space", "comment"):
            tokens.append(match.group())
        pos = match.end()
    return tokens


def _declared(tokens: list[str]) -> set[str]:
    """Names declared with const/let/var (one name, or a `let a, b;` list) or as arrow params."""
    names: set[str] = set()
    for i, word in enumerate(tokens):
        if word in ("const", "let", "var"):
            j = i + 1
            while j < len(tokens) and _is_name(tokens[j]):
                names.add(tokens[j])
                if tokens[j + 1] != ",":
                    break
                j += 2
        elif word == "=>":
            if _is_name(tokens[i - 1]):
                names.add(tokens[i - 1])
            elif tokens[i - 1] == ")":
                j = i - 2
                while tokens[j] != "(":
                    if _is_name(tokens[j]):
                        names.add(tokens[j])
                    j -= 1
    return names


def _is_name(token: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z_$][\w$]*", token)) and token not in _KEYWORDS


def _short_names(taken: set[str]) -> Iterator[str]:
    first = string.ascii_letters
    for size in itertools.count(1):
        for chars in itertools.product(first, repeat=size):
            name = "".join(chars)
            if name not in taken and name not in _KEYWORDS:
                yield name


def minify(source: str) -> str:
    tokens = _tokens(source)
    words = {t for t in tokens if _is_name(t)}
    declared = _declared(tokens)
    counts = Counter(t for t in tokens if t in declared)
    fresh = _short_names(words)
    renamed = {name: next(fresh) for name, _ in counts.most_common() if len(name) > 1}
    out: list[str] = []
    for i, token in enumerate(tokens):
        prev = tokens[i - 1] if i else ""
        following = tokens[i + 1] if i + 1 < len(tokens) else ""
        is_property = prev == "." or (following == ":" and prev in ("{", ","))
        if token in renamed and not is_property:
            token = renamed[token]
        # A space only where two tokens would otherwise fuse: `const a`, `a - -b`.
        if out and (
            (_word_edge(out[-1][-1]) and _word_edge(token[0]))
            or (out[-1][-1] == token[0] and token[0] in "+-")
        ):
            out.append(" ")
        out.append(token)
    return "".join(out) + "\n"


def _word_edge(ch: str) -> bool:
    return ch.isalnum() or ch in "_$"


def main() -> int:
    MINIFIED.write_text(minify(SOURCE.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"{MINIFIED.name}: {MINIFIED.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
