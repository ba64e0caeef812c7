"""Captcha verification: Cloudflare Turnstile, Google reCAPTCHA, hCaptcha, Yandex SmartCaptcha.

Owns the verify call (one `httpx.AsyncClient`, an explicit timeout) and the reading of each
provider's answer (`interpret`, pure). It fails closed: whatever the provider says other than a
pass (a refusal, a 4xx, an answer it cannot read, a pass for another site's hostname or another
action, a complaint about our own secret) makes the submission spam. Only when the provider
cannot answer at all (a timeout, no connection, a 5xx, or its own `internal-error`) is the
verdict `UNAVAILABLE`, and the intake accepts the submission: an outage at the captcha provider
must not lose real leads, and no client can cause one. The secret never leaves this module
except in the verify request's body.
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
MAX_CODE_CHARS = 48
# What the provider names the site and the widget action the token was solved for.
HOSTNAME_KEYS = {"yandex": "host"}
ACTION_PROVIDERS = frozenset({"turnstile", "recaptcha"})
# The metric's `reason` label: these codes as they are, anything else the provider says as
# "refused" (label values must stay few whatever a provider adds).
METRIC_REASONS = frozenset(
    {
        "ok",
        "missing_token",
        "token_too_long",
        "low_score",
        "hostname_mismatch",
        "action_mismatch",
        "misconfigured",
        "not_json",
        "no_verdict",
        "timeout",
        "unreachable",
        "internal-error",
        "http_4xx",
        "http_5xx",
    }
)


class Verdict(StrEnum):
    """What the provider said about one token."""

    PASSED = "passed"
    """A human, as far as the provider can tell."""
    FAILED = "failed"
    """Anything but a pass: missing, invalid, expired, reused or low-score token, another
    site's or action's token, a refusal, an unreadable answer: the submission is spam."""
    UNAVAILABLE = "unavailable"
    """The provider could not answer (timeout, no connection, 5xx): accepted, and counted."""


@dataclass(frozen=True, slots=True)
class CaptchaResult:
    verdict: Verdict
    reason: str  # a short code for logs: the provider's error code, "timeout", "http_503"...

    @property
    def metric_reason(self) -> str:
        """`reason` with a bounded set of values, for a metric label."""
        if self.reason.startswith("http_"):
            return "http_5xx" if self.reason.startswith("http_5") else "http_4xx"
        return self.reason if self.reason in METRIC_REASONS else "refused"


def interpret(
    provider: Provider,
    status_code: int,
    body: bytes,
    *,
    min_score: float,
    hostnames: frozenset[str] | None = None,
    action: str | None = None,
) -> CaptchaResult:
    """Read a verify answer. Pure; never raises.

    `hostnames`: the hosts a token may have been solved on (None: any). `action`: the widget
    action the form expects (None: any). Each is checked only where the provider names it.
    """
    if status_code >= 500:
        return CaptchaResult(Verdict.UNAVAILABLE, f"http_{status_code}")
    if status_code != 200:
        # A refusal is a verdict (Yandex answers 4xx to a bad request or a bad secret; the
        # siteverify APIs answer 200 to every judgement): letting it through would let anyone
        # who can provoke a 4xx past the captcha.
        if status_code in (401, 403):
            return CaptchaResult(Verdict.FAILED, "misconfigured")
        return CaptchaResult(Verdict.FAILED, f"http_{status_code}")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return CaptchaResult(Verdict.FAILED, "not_json")
    if not isinstance(data, dict):
        return CaptchaResult(Verdict.FAILED, "not_json")
    if provider == "yandex":
        status = data.get("status")
        if status == "ok":
            return _check_site(provider, data, hostnames=hostnames, action=action)
        if status == "failed":
            return CaptchaResult(Verdict.FAILED, "failed")
        return CaptchaResult(Verdict.FAILED, "no_verdict")
    codes = data.get("error-codes")
    code_list = [str(c)[:MAX_CODE_CHARS] for c in codes] if isinstance(codes, list) else []
    if any(code in CONFIG_ERRORS for code in code_list):
        return CaptchaResult(Verdict.FAILED, "misconfigured")
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
        return _check_site(provider, data, hostnames=hostnames, action=action)
    if success is False:
        if "internal-error" in code_list:
            # The provider's own failure, named as such: an outage, not a judgement.
            return CaptchaResult(Verdict.UNAVAILABLE, "internal-error")
        return CaptchaResult(Verdict.FAILED, code_list[0] if code_list else "failed")
    return CaptchaResult(Verdict.FAILED, "no_verdict")


def _check_site(
    provider: Provider,
    data: dict[str, object],
    *,
    hostnames: frozenset[str] | None,
    action: str | None,
) -> CaptchaResult:
    """A pass, unless the token was solved on another site or for another action.

    A token solved anywhere the site key is installed (or on a page an attacker copied it
    to, where the provider does not check domains) passes verification; the hostname the
    provider reports tells where. An empty or missing value is not checked: not every
    provider or key type reports it.
    """
    hostname = data.get(HOSTNAME_KEYS.get(provider, "hostname"))
    if (
        hostnames is not None
        and isinstance(hostname, str)
        and hostname
        and hostname.strip().lower().rstrip(".") not in hostnames
    ):
        return CaptchaResult(Verdict.FAILED, "hostname_mismatch")
    solved_for = data.get("action") if provider in ACTION_PROVIDERS else None
    if action is not None and isinstance(solved_for, str) and solved_for and solved_for != action:
        return CaptchaResult(Verdict.FAILED, "action_mismatch")
    return CaptchaResult(Verdict.PASSED, "ok")


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

    async def verify(
        self,
        token: str,
        *,
        remote_ip: str | None,
        hostnames: frozenset[str] | None = None,
        action: str | None = None,
    ) -> CaptchaResult:
        """The provider's verdict on `token`; see `interpret` for `hostnames` and `action`."""
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
            self.provider,
            response.status_code,
            response.content,
            min_score=self._min_score,
            hostnames=hostnames,
            action=action,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
