"""The security headers of every answer, set in one place: a Content-Security-Policy and framing
protection on HTML pages, `nosniff` and a Referrer-Policy on everything, and `no-store` where
answers hold personal data. A leaf: imports nothing from the app (main.py wraps the gateway
and the standalone emulator with it).
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Scripts only from files the gateway serves (no inline script, no eval); styles may be inline
# (the pages carry a <style> block and style attributes, and CSS cannot run code); no page may
# be framed. No form-action: a demo form's fallback post may be redirected to the form's own
# `redirect_url` on another site, and Chromium applies form-action to that redirect too.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'"
)
# `same-origin`, not `no-referrer`: under `no-referrer` a browser sends `Origin: null` with a
# page's post to its own origin, which ALLOWED_ORIGINS refuses (the demo page's form).
REFERRER_POLICY = "same-origin"

_EVERY_ANSWER: tuple[tuple[str, str], ...] = (
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", REFERRER_POLICY),
)
_HTML_PAGES = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-frame-options", "DENY"),
)


class SecurityHeaders:
    """Adds the headers to each answer, keeping any the route set itself; `no_store(path)` says
    which answers must never be cached (they hold personal data or the admin's view)."""

    def __init__(self, app: ASGIApp, *, no_store: Callable[[str], bool]) -> None:
        self.app = app
        self.no_store = no_store

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        private = self.no_store(str(scope.get("path", "")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", ()))
                headers = MutableHeaders(scope=message)
                added = _EVERY_ANSWER
                if headers.get("content-type", "").lower().startswith("text/html"):
                    added += _HTML_PAGES
                for name, value in added:
                    headers.setdefault(name, value)
                if private:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def under(*prefixes: str) -> Callable[[str], bool]:
    """A `no_store` test: the path is one of `prefixes` or below one (`/admin`, `/admin/…`)."""
    return lambda path: any(path == p or path.startswith(p.rstrip("/") + "/") for p in prefixes)
