"""`GET /embed.js`: the committed `embed.min.js`, read once, with caching headers and an ETag.

Static: no settings, no database. CORS is the app-wide middleware's (main.py).
"""

from __future__ import annotations

import hashlib
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import Response

SCRIPT = resources.files("app.embed").joinpath("embed.min.js").read_bytes()
ETAG = '"' + hashlib.sha256(SCRIPT).hexdigest()[:20] + '"'
MAX_AGE_SECONDS = 3600
HEADERS = {
    "Cache-Control": f"public, max-age={MAX_AGE_SECONDS}",
    "ETag": ETAG,
    "X-Content-Type-Options": "nosniff",
    # Landing pages isolated with Cross-Origin-Embedder-Policy may still load it.
    "Cross-Origin-Resource-Policy": "cross-origin",
}

router = APIRouter()


def _matches(if_none_match: str) -> bool:
    """RFC 9110 §13.1.2: a list of tags or `*`, compared weakly (W/ ignored)."""
    tags = (tag.strip().removeprefix("W/") for tag in if_none_match.split(","))
    return any(tag in ("*", ETAG) for tag in tags)


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
    if _matches(request.headers.get("if-none-match", "")):
        return Response(status_code=304, headers=HEADERS)
    return Response(SCRIPT, media_type="text/javascript; charset=utf-8", headers=HEADERS)
