"""The form's own spam signals: the honeypot and the minimum fill time."""

import pytest

from app.forms import Form
from app.intake.spam import spam_reason

SLOW_FORM = Form(id="contact", min_fill_seconds=3)


@pytest.mark.parametrize(
    ("form", "values", "reason"),
    [
        (Form(id="c"), {"phone": ["+15550001111"]}, None),
        (Form(id="c"), {"_gotcha": ["x"]}, "honeypot"),
        (Form(id="c"), {"_gotcha": ["  "]}, None),  # whitespace is no fill
        (Form(id="c", honeypot="website"), {"website": ["http://spam"]}, "honeypot"),
        (Form(id="c", honeypot=None), {"_gotcha": ["x"]}, None),
        (SLOW_FORM, {"_fill_ms": ["4500"]}, None),
        (SLOW_FORM, {"_fill_ms": ["3000"]}, None),
        (SLOW_FORM, {"_fill_ms": ["2999.5"]}, "too_fast"),
        (SLOW_FORM, {"_fill_ms": ["120"]}, "too_fast"),
        (SLOW_FORM, {"_fill_ms": ["-5"]}, "too_fast"),
        (SLOW_FORM, {"_fill_ms": ["soon"]}, "too_fast"),
        (SLOW_FORM, {"_fill_ms": ["nan"]}, "too_fast"),
        (SLOW_FORM, {"_fill_ms": ["inf"]}, "too_fast"),
        # No script ran (or none was installed): no evidence either way.
        (SLOW_FORM, {}, None),
        (SLOW_FORM, {"_fill_ms": [""]}, None),
        # The fill time is only judged where the form asks for it.
        (Form(id="c"), {"_fill_ms": ["1"]}, None),
    ],
)
def test_spam_reasons(form: Form, values: dict[str, list[str]], reason: str | None) -> None:
    assert spam_reason(form, values) == reason
