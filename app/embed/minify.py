"""Makes `embed.min.js` (what `/embed.js` serves) from the readable `embed.js` beside it.

Minifying is a solved problem: terser (npm, pinned in tools/js/package.json) drops comments and
spare whitespace and gives local names short ones, which keeps the script under its 3,072-byte
budget. It runs at build time only: the minified file is committed, and a test checks that it
is what terser makes of `embed.js`. After editing embed.js:

    npm ci --prefix tools/js && python -m app.embed.minify
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent
SOURCE = HERE / "embed.js"
MINIFIED = HERE / "embed.min.js"
TOOLS = HERE.parent.parent / "tools" / "js"
TERSER = TOOLS / "node_modules" / "terser" / "bin" / "terser"
# ES2017: what embed.js is written in (arrow functions, const/let); every browser it targets.
OPTIONS = ("--ecma", "2017", "--compress", "--mangle", "--comments", "false")


class MinifierMissing(RuntimeError):
    """terser or node is not installed here."""


def available() -> bool:
    return TERSER.is_file() and shutil.which("node") is not None


def minify(source: str) -> str:
    """What terser, with the project's options, makes of `source`."""
    if not available():
        raise MinifierMissing(f"terser is not installed: run `npm ci --prefix {TOOLS}`")
    node = shutil.which("node") or "node"
    result = subprocess.run(  # noqa: S603 - a fixed command, the source on stdin
        [node, str(TERSER), *OPTIONS],
        input=source,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"terser failed: {result.stderr.strip()}")
    return result.stdout.strip() + "\n"


def main() -> int:
    try:
        MINIFIED.write_text(minify(SOURCE.read_text(encoding="utf-8")), encoding="utf-8")
    except (MinifierMissing, RuntimeError) as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"wrote {MINIFIED} ({MINIFIED.stat().st_size} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
