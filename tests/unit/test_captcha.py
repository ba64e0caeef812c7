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
        # Our secret is wrong: a refusal all the same (failing open would let every bot in
        # until someone noticed); the intake logs it as an ERROR.
        (
            "turnstile",
            200,
            body({"success": False, "error-codes": ["invalid-input-secret"]}),
            F,
            "misconfigured",
        ),
        # The provider's own failure, named as such: no verdict.
        (
            "turnstile",
            200,
            body({"success": False, "error-codes": ["internal-error"]}),
            U,
            "internal-error",
        ),
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
            F,
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
        (
            "yandex",
            403,
            body({"status": "failed", "message": "Authentication failed"}),
            F,
            "misconfigured",
        ),
        ("yandex", 400, body({"status": "failed", "message": "Bad request"}), F, "http_400"),
        ("yandex", 200, body({"message": "?"}), F, "no_verdict"),
        # Only a provider that cannot answer gives no verdict; anything it says is one.
        ("turnstile", 503, b"upstream down", U, "http_503"),
        ("yandex", 500, b"", U, "http_500"),
        ("turnstile", 400, body({"success": False, "error-codes": ["bad-request"]}), F, "http_400"),
        ("recaptcha", 429, b"slow down", F, "http_429"),
        ("hcaptcha", 302, b"", F, "http_302"),
        ("turnstile", 200, b"<html>maintenance</html>", F, "not_json"),
        ("turnstile", 200, body([1, 2]), F, "not_json"),
        ("turnstile", 200, body({"success": "yes"}), F, "no_verdict"),
        ("turnstile", 200, b"[" * 100_000, F, "not_json"),
    ],
)
def test_each_answer_is_read_as_passed_failed_or_unavailable(
    provider: Provider, status: int, answer: bytes, verdict: Verdict, reason: str | None
) -> None:
    result = interpret(provider, status, answer, min_score=0.5)
    assert result.verdict is verdict
    if reason is not None:
        assert result.reason == reason


SHOP = frozenset({"shop.example", "www.shop.example"})


@pytest.mark.parametrize(
    ("provider", "answer", "action", "verdict", "reason"),
    [
        ("turnstile", {"success": True, "hostname": "shop.example"}, None, P, "ok"),
        ("turnstile", {"success": True, "hostname": "WWW.Shop.Example."}, None, P, "ok"),
        ("turnstile", {"success": True, "hostname": "evil.example"}, None, F, "hostname_mismatch"),
        ("hcaptcha", {"success": True, "hostname": "evil.example"}, None, F, "hostname_mismatch"),
        ("yandex", {"status": "ok", "host": "evil.example"}, None, F, "hostname_mismatch"),
        ("yandex", {"status": "ok", "host": "shop.example"}, None, P, "ok"),
        # Not every key type reports the site: an empty or missing hostname is not judged.
        ("recaptcha", {"success": True, "hostname": ""}, None, P, "ok"),
        ("recaptcha", {"success": True}, None, P, "ok"),
        (
            "turnstile",
            {"success": True, "hostname": "shop.example", "action": "contact"},
            "contact",
            P,
            "ok",
        ),
        (
            "recaptcha",
            {"success": True, "hostname": "shop.example", "action": "login", "score": 0.9},
            "contact",
            F,
            "action_mismatch",
        ),
        ("turnstile", {"success": True, "hostname": "shop.example", "action": ""}, "c", P, "ok"),
        # hCaptcha has no actions; whatever it says about one is not read.
        ("hcaptcha", {"success": True, "hostname": "shop.example", "action": "x"}, "c", P, "ok"),
    ],
)
def test_a_pass_must_name_one_of_the_forms_hosts_and_its_action(
    provider: Provider,
    answer: dict[str, object],
    action: str | None,
    verdict: Verdict,
    reason: str,
) -> None:
    result = interpret(provider, 200, body(answer), min_score=0.5, hostnames=SHOP, action=action)
    assert (result.verdict, result.reason) == (verdict, reason)


def test_any_host_passes_when_the_form_takes_any_origin() -> None:
    answer = body({"success": True, "hostname": "evil.example"})
    assert interpret("turnstile", 200, answer, min_score=0.5).verdict is P


@pytest.mark.parametrize(
    ("reason", "label"),
    [
        ("http_503", "http_5xx"),
        ("http_418", "http_4xx"),
        ("timeout", "timeout"),
        ("invalid-input-response", "refused"),
        ("a-code-some-provider-adds-tomorrow", "refused"),
    ],
)
def test_the_metric_reason_takes_a_few_values_whatever_the_provider_says(
    reason: str, label: str
) -> None:
    from app.intake.captcha import CaptchaResult

    assert CaptchaResult(F, reason).metric_reason == label


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
