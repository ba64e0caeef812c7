"""Captcha verification: Cloudflare Turnstile, Google reCAPTCHA, hCaptcha, Yandex SmartCaptcha.

Owns the verify call (one `httpx.AsyncClient`, an explicit timeout) and the reading of each
provider's answer (`interpret`, pure). A token that the provider rejects, or no token at all,
makes the submission spam. When the provider cannot give a verdict (unreachable, times out,
answers 5xx or garbage, or says our own secret is wrong) the verdict is `UNAVAILABLE` and the
intake accepts the submission: an outage at the captcha provider must not lose real leads.
The secret never leaves this module except in the verify request's body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

import httpx
from pydantic import SecretStr

Provider = Literal["turnstile", "recaptcha", "hcaptcha", "yandex"]

VERIFY_URLS: dict[str, str] = {
    "turnstile": "https://challenges.cloudflare.com/turnstile/v0/siteverify",
    "recaptcha": "https://www.google.com/recaptcha/api/siteverify",
    "hcaptcha": "https://api.hcaptcha.com/siteverify",
    "yandex": "https://smartcaptcha.yandexcloud.net/validate",
}
# The hidden field each provider's widget adds to the form.
TOKEN_FIELDS: dict[str, str] = {
    "turnstile": "cf-turnstile-response",
    "recaptcha": "g-recaptcha-response",
    "hcaptcha": "h-captcha-response",
    "yandex": "smart-token",
}
ALL_TOKEN_FIELDS = frozenset(TOKEN_FIELDS.values())
# Error codes that blame our configuration, not the visitor (siteverify APIs share them).
CONFIG_ERRORS = frozenset(
    {"missing-input-secret", "invalid-input-secret", "sitekey-secret-mismatch", "invalid-keys"}
)
MAX_TOKEN_CHARS = 4096
MAX_CODE_CHARS = 64


class Verdict(StrEnum):
    """What the provider said about one token."""

    PASSED = "passed"
    """A human, as far as the provider can tell."""
    FAILED = "failed"
    """Missing, invalid, expired, reused or low-score token: the submission is spam."""
    UNAVAILABLE = "unavailable"
    """No verdict (outage, timeout, our misconfiguration): accepted, and logged."""


@dataclass(frozen=True, slots=True)
class CaptchaResult:
    verdict: Verdict
    reason: str  # a short code for logs: the provider's error code, "timeout", "http_503"...


def interpret(
    provider: Provider, status_code: int, body: bytes, *, min_score: float
) -> CaptchaResult:
    """Read a verify answer. Pure; never raises."""
    if status_code != 200:
        # Yandex answers 4xx/5xx when it cannot judge and asks integrators to let the user
        # through then; the siteverify APIs answer 200 to every judgement they make.
        return CaptchaResult(Verdict.UNAVAILABLE, f"http_{status_code}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return CaptchaResult(Verdict.UNAVAILABLE, "not_json")
    if not isinstance(data, dict):
        return CaptchaResult(Verdict.UNAVAILABLE, "not_json")
    if provider == "yandex":
        status = data.get("status")
        if status == "ok":
            return CaptchaResult(Verdict.PASSED, "ok")
        if status == "failed":
            return CaptchaResult(Verdict.FAILED, "failed")
        return CaptchaResult(Verdict.UNAVAILABLE, "no_status")
    codes = data.get("error-codes")
    code_list = [str(c)[:MAX_CODE_CHARS] for c in codes] if isinstance(codes, list) else []
    if any(code in CONFIG_ERRORS for code in code_list):
        return CaptchaResult(Verdict.UNAVAILABLE, "misconfigured")
    success = data.get("success")
    if success is True:
        score = data.get("score")
        # reCAPTCHA v3 passes every token and scores it (1.0 = human). hCaptcha Enterprise
        # scores the other way round (1.0 = bot), so only reCAPTCHA's score is read.
        if (
            provider == "recaptcha"
            and isinstance(score, int | float)
            and not isinstance(score, bool)
            and score < min_score
        ):
            return CaptchaResult(Verdict.FAILED, "low_score")
        return CaptchaResult(Verdict.PASSED, "ok")
    if success is False:
        if "internal-error" in code_list:
            return CaptchaResult(Verdict.UNAVAILABLE, "internal-error")
        return CaptchaResult(Verdict.FAILED, code_list[0] if code_list else "failed")
    return CaptchaResult(Verdict.UNAVAILABLE, "no_success")


class CaptchaVerifier:
    """Verifies tokens with one provider; the HTTP client is made on first use."""

    def __init__(
        self,
        provider: Provider,
        *,
        secret: SecretStr,
        verify_url: str | None = None,
        timeout_seconds: float = 5.0,
        min_score: float = 0.5,
    ) -> None:
        self.provider = provider
        self.token_field = TOKEN_FIELDS[provider]
        self.verify_url = verify_url or VERIFY_URLS[provider]
        self._secret = secret
        self._timeout = httpx.Timeout(timeout_seconds)
        self._min_score = min_score
        self._client: httpx.AsyncClient | None = None

    async def verify(self, token: str, *, remote_ip: str | None) -> CaptchaResult:
        token = token.strip()
        if not token:
            return CaptchaResult(Verdict.FAILED, "missing_token")
        if len(token) > MAX_TOKEN_CHARS:
            return CaptchaResult(Verdict.FAILED, "token_too_long")
        key = "token" if self.provider == "yandex" else "response"
        ip_key = "ip" if self.provider == "yandex" else "remoteip"
        form = {"secret": self._secret.get_secret_value(), key: token}
        if remote_ip:
            form[ip_key] = remote_ip
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        try:
            response = await self._client.post(self.verify_url, data=form)
        except httpx.TimeoutException:
            return CaptchaResult(Verdict.UNAVAILABLE, "timeout")
        except httpx.HTTPError:
            return CaptchaResult(Verdict.UNAVAILABLE, "unreachable")
        return interpret(
            self.provider, response.status_code, response.content, min_score=self._min_score
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
