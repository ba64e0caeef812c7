"""The pages at `/`: a status page, or in sandbox mode a demo landing page with a sample trace.

Static HTML with everything escaped; no scripts from elsewhere.
"""

from __future__ import annotations

import html
import json

# A paid-search visit, as b24Tracker.guest.getTrace() returns it (bitrix24-api.md §8.1).
SAMPLE_TRACE = json.dumps(
    {
        "url": "https://shop.example/contact",
        "ref": "https://www.google.com/",
        "device": {"isMobile": False},
        "tags": {
            "ts": 1767225600,
            "list": {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring"},
            "gclid": "Cj0KCQ",
        },
        "pages": {
            "list": [
                ["https://shop.example/?utm_source=google&utm_medium=cpc", 1767225600, "Shop"],
                ["https://shop.example/contact", 1767225660, "Contact us"],
            ]
        },
        "gid": None,
    },
    separators=(",", ":"),
)

_STYLE = """<style>
body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#222}
.banner{background:#fff3cd;border:1px solid #e0c36c;padding:.75rem 1rem;border-radius:6px}
label{display:block;margin:.6rem 0 .2rem}input,textarea{width:100%;padding:.4rem;font:inherit}
button{margin-top:1rem;padding:.5rem 1.2rem;font:inherit}code{background:#f3f3f3;padding:0 .2rem}
</style>"""


def demo_page(form_id: str) -> str:
    action = html.escape(f"forms/{form_id}", quote=True)
    trace = html.escape(SAMPLE_TRACE, quote=True)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>b24-form-gateway: sandbox</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{_STYLE}</head><body>
<p class="banner"><strong>Sandbox mode.</strong> No <code>B24_WEBHOOK_URL</code> is set, so
submissions go to the built-in Bitrix24 emulator, never to a real portal.
<a href="sandbox/">See the records it created</a>.</p>
<h1>Demo landing page</h1>
<p>This form posts to <code>/{action}</code> with a sample Sales Intelligence trace of a
paid-search visit (utm_source=google). The lead shows up on the sandbox page with its trace.</p>
<form method="post" action="{action}">
<label>Name <input name="name" value="Ann Example"></label>
<label>Phone <input name="phone" value="+49 170 1234567"></label>
<label>Email <input name="email" type="email" value="ann@example.com"></label>
<label>Message <textarea name="message">I would like a quote.</textarea></label>
<input type="hidden" name="trace" value="{trace}">
<button type="submit">Send</button>
</form></body></html>
"""


def status_page(portal_host: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>b24-form-gateway</title>{_STYLE}</head><body>
<h1>b24-form-gateway</h1>
<p>Running. Submissions posted to <code>/forms/&lt;form id&gt;</code> are delivered to the
Bitrix24 portal at <code>{html.escape(portal_host)}</code>.</p>
<p><a href="healthz">healthz</a> · <a href="readyz">readyz</a></p>
</body></html>
"""
