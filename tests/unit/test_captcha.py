"""Reading each captcha provider's verify answer, and the captcha settings."""

import json

import pytest

from app.intake.captcha import TOKEN_FIELDS, VERIFY_URLS, Provider, Verdict, interpret
from app.settings import Settings, SettingsError

P, F, U = Verdict.PASSED, Verdict.FAILED, Verdict.UNAVAILABLE


def body(data: object) -> bytes:
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    ("provider", "status", "answer", "verdict", "reason"),
    [
        ("turnstile", 200, body({"success": True, "error-codes": []}), P, "ok"),
        (
            "turnstile",
            200,
            body({"success": False, "error-codes": ["timeout-or-duplicate"]}),
            F,
            "timeout-or-duplicate",
        ),
        ("turnstile", 200, body({"success": False}), F, "failed"),
        # Our secret is wrong: not the visitor's fault, so no verdict on the visitor.
        (
            "turnstile",
            200,
            body({"success": False, "error-codes": ["invalid-input-secret"]}),
            U,
            "misconfigured",
        ),
        ("turnstile", 200, body({"success": False, "error-codes": ["internal-error"]}), U, None),
        ("recaptcha", 200, body({"success": True}), P, "ok"),
        ("recaptcha", 200, body({"success": True, "score": 0.9}), P, "ok"),
        ("recaptcha", 200, body({"success": True, "score": 0.1}), F, "low_score"),
        (
            "recaptcha",
            200,
            body({"success": False, "error-codes": ["invalid-input-response"]}),
            F,
            None,
        ),
        ("hcaptcha", 200, body({"success": True, "score": 0.9}), P, "ok"),  # bot-score: ignored
        (
            "hcaptcha",
            200,
            body({"success": False, "error-codes": ["sitekey-secret-mismatch"]}),
            U,
            "misconfigured",
        ),
        (
            "hcaptcha",
            200,
            body({"success": False, "error-codes": ["already-seen-response"]}),
            F,
            None,
        ),
        ("yandex", 200, body({"status": "ok", "message": "", "host": "a.example"}), P, "ok"),
        (
            "yandex",
            200,
            body({"status": "failed", "message": "Invalid or expired Token."}),
            F,
            None,
        ),
        ("yandex", 403, body({"status": "failed", "message": "Authentication failed"}), U, None),
        ("yandex", 200, body({"message": "?"}), U, None),
        ("turnstile", 503, b"upstream down", U, "http_503"),
        ("turnstile", 200, b"<html>maintenance</html>", U, "not_json"),
        ("turnstile", 200, body([1, 2]), U, "not_json"),
        ("turnstile", 200, body({"success": "yes"}), U, "no_success"),
        ("turnstile", 200, b"[" * 100_000, U, "not_json"),
    ],
)
def test_each_answer_is_read_as_passed_failed_or_unavailable(
    provider: Provider, status: int, answer: bytes, verdict: Verdict, reason: str | None
) -> None:
    result = interpret(provider, status, answer, min_score=0.5)
    assert result.verdict is verdict
    if reason is not None:
        assert result.reason == reason


def test_every_provider_has_a_verify_url_and_a_token_field() -> None:
    assert set(VERIFY_URLS) == set(TOKEN_FIELDS) == {"turnstile", "recaptcha", "hcaptcha", "yandex"}
    assert all(url.startswith("https://") for url in VERIFY_URLS.values())


def test_a_captcha_provider_needs_its_secret() -> None:
    with pytest.raises(SettingsError, match="CAPTCHA_SECRET"):
        Settings.load(CAPTCHA_PROVIDER="turnstile", _env_file=None)
    settings = Settings.load(CAPTCHA_PROVIDER="hcaptcha", CAPTCHA_SECRET="s3", _env_file=None)
    assert settings.CAPTCHA_SECRET is not None
    assert "s3" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"CAPTCHA_PROVIDER": "friendlycaptcha", "CAPTCHA_SECRET": "x"}, "CAPTCHA_PROVIDER"),
        ({"CAPTCHA_VERIFY_URL": "http://verifier.example/siteverify"}, "CAPTCHA_VERIFY_URL"),
        ({"CAPTCHA_VERIFY_URL": "siteverify"}, "CAPTCHA_VERIFY_URL"),
        ({"TRUSTED_PROXIES": "10.0.0.0/8, proxy.internal"}, "TRUSTED_PROXIES"),
        ({"RETENTION_DAYS": "-1"}, "RETENTION_DAYS"),
    ],
)
def test_bad_front_door_settings_name_the_variable(overrides: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.load(**overrides, _env_file=None)


def test_front_door_defaults() -> None:
    settings = Settings.load(_env_file=None)
    assert settings.TRUSTED_PROXIES == ()
    assert settings.CAPTCHA_PROVIDER is None
    assert settings.RETENTION_DAYS == 30
    loopback = Settings.load(CAPTCHA_VERIFY_URL="http://127.0.0.1:9/verify", _env_file=None)
    assert loopback.CAPTCHA_VERIFY_URL == "http://127.0.0.1:9/verify"
