"""The pages at `/`: a status page, or in sandbox mode a demo landing page whose form uses
embed.js with a stand-in tracker (`demo-tracker.js`) that returns a sample trace.

Static HTML with everything escaped; no inline script (the pages' Content-Security-Policy allows
only scripts the gateway serves) and no scripts from elsewhere. Public: nothing here names the
portal.
"""

from __future__ import annotations

import html
import json

# A paid-search visit, as b24Tracker.guest.getTrace() returns it (docs/bitrix24.md §8.1).
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


DEMO_TRACKER_PATH = "/demo-tracker.js"
# Stands in for the Bitrix24 tracker (a real page gets it from the portal's Sales Intelligence
# code). It "loads" late, as the real one may: embed.js waits for it at submit.
DEMO_TRACKER_JS = f"""setTimeout(function () {{
  window.b24Tracker = {{guest: {{getTrace: function () {{ return {json.dumps(SAMPLE_TRACE)}; }}}}}};
}}, 500);
"""


def demo_page(form_id: str) -> str:
    action = html.escape(f"forms/{form_id}", quote=True)
    tracker = DEMO_TRACKER_PATH.lstrip("/")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>b24-form-gateway: sandbox</title>
<meta name="viewport" content="width=device-width, initial-scale=1">{_STYLE}
<script src="embed.js" defer></script>
<script src="{tracker}" defer></script>
</head><body>
<p class="banner"><strong>Sandbox mode.</strong> No <code>B24_WEBHOOK_URL</code> is set, so
submissions go to the built-in Bitrix24 emulator, never to a real portal.
<a href="sandbox/">See the records it created</a>.</p>
<h1>Demo landing page</h1>
<p>This form is what a landing page adds: <code>&lt;script src=".../embed.js" defer&gt;</code>
and <code>data-b24-gateway</code> on the form. At submit, embed.js puts the tracker's
<code>getTrace()</code> (here a sample paid-search visit) and the visit's UTM tags into the
form, and posts it to <code>/{action}</code> with <code>fetch</code>
(<code>data-b24-ajax</code>). Try <a href="?utm_source=newsletter&amp;utm_medium=email">arriving
from a newsletter</a> first: the tags are kept for 28 days.</p>
<form method="post" action="{action}" data-b24-gateway data-b24-ajax>
<label>Name <input name="name" value="Ann Example"></label>
<label>Phone <input name="phone" value="+49 170 1234567"></label>
<label>Email <input name="email" type="email" value="ann@example.com"></label>
<label>Message <textarea name="message">I would like a quote.</textarea></label>
<button type="submit">Send</button>
<p data-b24-success role="status" hidden>Sent. <a href="sandbox/">See the lead</a>.</p>
<p data-b24-error role="alert" hidden>Not sent: check the fields, or wait while it retries.</p>
</form></body></html>
"""


def status_page() -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>b24-form-gateway</title>{_STYLE}</head><body>
<h1>b24-form-gateway</h1>
<p>Running. Submissions posted to <code>/forms/&lt;form id&gt;</code> are delivered to the
Bitrix24 portal.</p>
<p><a href="healthz">healthz</a> · <a href="readyz">readyz</a></p>
</body></html>
"""
