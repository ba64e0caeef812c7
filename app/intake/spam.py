"""The cheap spam signals a form carries itself: the honeypot and the fill time. Pure.

Fill time: the page puts the milliseconds the visitor spent on the form into the hidden field
`_fill_ms` at submit (embed.js will; any script may). It is an elapsed time measured by the
page's own monotonic clock (`performance.now()` at render, again at submit), not a timestamp,
so a visitor whose device clock is wrong is never judged by it. A post without the field
(no JavaScript, a page without the script) is not judged: that is no evidence of a bot.
"""

from __future__ import annotations

import math

from app.forms import Form, Values, first

FILL_TIME_FIELD = "_fill_ms"
HONEYPOT = "honeypot"
TOO_FAST = "too_fast"


def spam_reason(form: Form, values: Values) -> str | None:
    """Why the form's own fields mark this submission as spam, or None."""
    if form.honeypot and first(values, form.honeypot):
        return HONEYPOT
    if form.min_fill_seconds > 0 and _too_fast(first(values, FILL_TIME_FIELD), form):
        return TOO_FAST
    return None


def _too_fast(raw: str, form: Form) -> bool:
    if not raw:
        return False
    try:
        elapsed_ms = float(raw)
    except ValueError:
        return True  # only a script writes this field, and ours writes a number
    if not math.isfinite(elapsed_ms) or elapsed_ms < 0:
        return True
    return elapsed_ms < form.min_fill_seconds * 1000
