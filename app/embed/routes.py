"""`GET /embed.js`: the committed `embed.min.js`, read once, gzip-compressed for clients that
accept it, with caching headers and an ETag per representation.

Static: no settings, no database. CORS is the app-wide middleware's (main.py).
"""

from __future__ import annotations

import gzip
import hashlib
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

SCRIPT = resources.files("app.embed").joinpath("embed.min.js").read_bytes()
# Compressed once, at import: the same bytes for every request (mtime 0 keeps them stable).
SCRIPT_GZIP = gzip.compress(SCRIPT, compresslevel=9, mtime=0)
_DIGEST = hashlib.sha256(SCRIPT).hexdigest()[:20]
ETAG = f'"{_DIGEST}"'
ETAG_GZIP = f'"{_DIGEST}-gzip"'  # another representation, another strong validator
MAX_AGE_SECONDS = 3600
HEADERS = {
    "Cache-Control": f"public, max-age={MAX_AGE_SECONDS}",
    "X-Content-Type-Options": "nosniff",
    # Landing pages isolated with Cross-Origin-Embedder-Policy may still load it.
    "Cross-Origin-Resource-Policy": "cross-origin",
    "Vary": "Accept-Encoding",
}

router = APIRouter()


def _matches(if_none_match: str) -> bool:
    """RFC 9110 §13.1.2: a list of tags or `*`, compared weakly (W/ ignored)."""
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in ("*", ETAG, ETAG_GZIP) for tag in tags)


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether `Accept-Encoding` allows gzip (RFC 9110 §12.5.3: `q=0` refuses it)."""
    for item in accept_encoding.lower().split(","):
        coding, _, params = item.partition(";")
        if coding.strip() in ("gzip", "x-gzip", "*"):
            quality = params.strip().removeprefix("q=")
            try:
                return not params.strip() or float(quality) > 0
            except ValueError:
                return False
    return False


@router.get(
    "/embed.js",
    summary="The script a landing page includes to attach the trace to its forms",
    response_class=Response,
    responses={200: {"content": {"text/javascript": {}}}, 304: {"description": "Not modified"}},
)
# HEAD separately and out of the schema: one route with both methods gives two operations the
# same id, which FastAPI warns about when it builds /openapi.json.
@router.head("/embed.js", include_in_schema=False)
async def embed_js(request: Request) -> Response:
    if _accepts_gzip(request.headers.get("accept-encoding", "")):
        body, headers = SCRIPT_GZIP, HEADERS | {"ETag": ETAG_GZIP, "Content-Encoding": "gzip"}
    else:
        body, headers = SCRIPT, HEADERS | {"ETag": ETAG}
    if _matches(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)
