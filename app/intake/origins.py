"""Which origins may post to which form: the `Origin`/`Referer` check, CORS per form, and the
start-up check that a form's redirects stay on its allowed origins (never an open redirect).

A form's allowed origins are `ALLOWED_ORIGINS` plus the form's own `allowed_origins`; when both
are empty, any origin may post. Pure policy plus one ASGI dispatcher; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from app.forms import Form, FormsError
from app.settings import normalise_origin

FORMS_PREFIX = "/forms/"
CORS_METHODS = ("GET", "POST")
CORS_HEADERS = ("Content-Type", "Accept", "Idempotency-Key")
CORS_MAX_AGE_SECONDS = 3600


class OriginPolicy:
    """The allowed origins of every form; `None` from `allowed` means any origin."""

    def __init__(self, global_origins: tuple[str, ...], forms: Mapping[str, Form]) -> None:
        self.global_origins = frozenset(global_origins)
        self._per_form = {
            form_id: self.global_origins | frozenset(form.allowed_origins)
            for form_id, form in forms.items()
        }

    def allowed(self, form_id: str | None) -> frozenset[str] | None:
        origins = self._per_form.get(form_id or "", self.global_origins)
        return origins or None

    def denies(self, form_id: str, headers: Headers) -> bool:
        """True when a browser says the post comes from an origin this form does not allow.

        A request with neither `Origin` nor `Referer` is not a cross-site browser post (curl, a
        server, a privacy proxy that strips both): it is let through, since nothing in it can
        be checked, and a non-browser client could forge the headers anyway.
        """
        allowed = self.allowed(form_id)
        if allowed is None:
            return False
        claimed = request_origin(headers)
        if claimed is None:
            return False
        return normalise_origin(claimed) not in allowed


def request_origin(headers: Headers) -> str | None:
    """The origin a browser claims: `Origin`, else the origin part of `Referer`.

    An `Origin` of `null` (sandboxed frames, some redirects) is returned as it is, and is
    allowed only where any origin is.
    """
    origin = headers.get("origin")
    if origin is not None:
        return origin
    referer = headers.get("referer")
    if not referer:
        return None
    try:
        parts = urlsplit(referer)
    except ValueError:  # e.g. an unclosed IPv6 bracket: no origin can be read from it
        return "null"
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else "null"


def origin_host(origin: str) -> str:
    """The host of a normalised origin (`https://www.example.com:8443` -> `www.example.com`)."""
    return (urlsplit(origin).hostname or "").rstrip(".")


def check_redirects(forms: Mapping[str, Form], policy: OriginPolicy) -> None:
    """FormsError when a form would redirect a browser off its allowed origins.

    Redirect targets come only from the forms file, never from a request; with origins
    configured, they must also be on one of them, so a form cannot bounce visitors elsewhere.
    """
    for form in forms.values():
        allowed = policy.allowed(form.id)
        if allowed is None:
            continue
        for key in ("redirect_url", "error_redirect_url"):
            url = getattr(form, key)
            if url is not None and normalise_origin(url) not in allowed:
                raise FormsError(
                    f"[forms.{form.id}] {key}: {normalise_origin(url)} is not one of the "
                    "form's allowed origins (ALLOWED_ORIGINS and allowed_origins)"
                )


class FormsCORS:
    """CORS with a per-form origin list: Starlette's CORSMiddleware, one instance per list.

    `/forms/{id}` is answered (preflight included) by the instance holding that form's
    origins; every other path, and unknown forms, by the one for `ALLOWED_ORIGINS`. With no
    list at all, any origin is echoed (embed.js works on any page; docs/design.md).
    """

    def __init__(self, app: ASGIApp, *, policy: OriginPolicy, form_ids: tuple[str, ...]) -> None:
        self._default = _cors(app, policy.allowed(None))
        self._per_form = {form_id: _cors(app, policy.allowed(form_id)) for form_id in form_ids}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self._default
        path = str(scope.get("path", "")) if scope["type"] == "http" else ""
        if path.startswith(FORMS_PREFIX):
            handler = self._per_form.get(path[len(FORMS_PREFIX) :], self._default)
        await handler(scope, receive, send)


def _cors(app: ASGIApp, origins: frozenset[str] | None) -> CORSMiddleware:
    return CORSMiddleware(
        app,
        allow_origins=sorted(origins or ()),
        allow_origin_regex=None if origins else ".*",
        allow_methods=list(CORS_METHODS),
        allow_headers=list(CORS_HEADERS),
        max_age=CORS_MAX_AGE_SECONDS,
    )
