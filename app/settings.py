"""Every setting of the gateway, read from the environment (and `.env`) once and validated.

Nothing else reads the environment. `Settings.load()` turns a validation failure into
`SettingsError`, whose message names the offending variable.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.netaddr import is_loopback_host

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./data/gateway.db"
# A custom CRM field code as crm.*.userfield.add makes it (UF_CRM_ + A-Z 0-9 _, 50 at most).
_USER_FIELD_RE = re.compile(r"^UF_CRM_[A-Z0-9_]{1,43}$")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(second|minute|hour|day)\s*$")
_DATABASE_SCHEMES = {
    "postgres://": "postgresql+asyncpg://",
    "postgresql://": "postgresql+asyncpg://",
    "sqlite:///": "sqlite+aiosqlite:///",
}
# Long enough that guessing it is hopeless even without the throttle on failed attempts.
ADMIN_TOKEN_MIN_LENGTH = 32
NEW_TOKEN_COMMAND = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'  # noqa: S105 - a command, no secret


def normalise_origin(value: str) -> str | None:
    """`scheme://host[:port]` as a browser sends it in `Origin` (lower case, no default port).

    None when `value` names no http(s) origin (e.g. the `null` origin of sandboxed pages).
    """
    try:
        parts = urlsplit(value.strip())
        port = parts.port
    except ValueError:  # an unclosed IPv6 bracket, a port out of range
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname  # lower-cased by urlsplit; an IPv6 literal loses its brackets
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == (80 if scheme == "http" else 443):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_setting(value: str) -> str:
    """An origin as written in configuration, normalised; ValueError when it is not one."""
    parts = urlsplit(value.strip())
    origin = normalise_origin(value)
    if origin is None or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{value.strip()[:100]!r} is not an origin like https://www.example.com")
    if parts.username is not None or parts.password is not None:
        raise ValueError("an origin carries no user name or password")
    return origin


class SettingsError(Exception):
    """A setting has a value the gateway cannot start with; the message names the variable."""


class Settings(BaseSettings):
    """The gateway's configuration. Field names are the environment variable names."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=True,
        env_ignore_empty=True,  # `FORMS_FILE=` in .env means unset, as in .env.example
    )

    # --- the contract's main settings (docs/design.md, "Configuration") ---
    B24_WEBHOOK_URL: SecretStr | None = None
    DATABASE_URL: str = DEFAULT_DATABASE_URL
    FORMS_FILE: Path | None = None
    ADMIN_TOKEN: SecretStr | None = None
    # The time zone the operator pages (/admin) show times in and read date filters in.
    ADMIN_TIMEZONE: str = "UTC"
    ALLOWED_ORIGINS: Annotated[tuple[str, ...], NoDecode] = ()
    WORKER: bool = True
    RATE_LIMIT_PER_IP: str = "30/minute"
    # Clients (client and form pairs) the per-client limit keeps in memory; the least recently
    # seen is forgotten beyond it. With RATE_LIMIT_STORAGE_URL, used only while Redis is away.
    RATE_LIMIT_MAX_CLIENTS: int = Field(default=100_000, ge=100)
    # redis://, rediss:// or unix:// : replicas share the per-client counts there. A secret
    # (it may carry a password). Unset: each process counts on its own.
    RATE_LIMIT_STORAGE_URL: SecretStr | None = None

    # --- server ---
    HOST: str = "127.0.0.1"
    # Sandbox mode (no webhook) on a HOST that is not loopback: off unless asked for, since the
    # sandbox lets anyone who reaches it read every lead and reset the emulator.
    SANDBOX: bool = False
    PORT: int = Field(default=8000, ge=1, le=65535)
    LOG_LEVEL: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    LOG_FORMAT: Literal["console", "json"] = "console"
    # Connection limits of `serve` (README, "Connection limits"): the time for a request's
    # headers and for its body, the size of its headers, and the connections served at once.
    HTTP_HEADER_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0, le=600)
    HTTP_BODY_TIMEOUT_SECONDS: float = Field(default=30.0, gt=0, le=3600)
    HTTP_MAX_HEADER_BYTES: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    HTTP_MAX_CONNECTIONS: int = Field(default=500, ge=1)

    # --- intake ---
    MAX_BODY_BYTES: int = Field(default=64 * 1024, ge=1024)
    MAX_TRACE_BYTES: int = Field(default=64 * 1024, ge=256)
    # Peers whose X-Forwarded-For is believed (IPs or CIDRs); nobody's by default.
    TRUSTED_PROXIES: Annotated[tuple[str, ...], NoDecode] = ()
    CAPTCHA_PROVIDER: Literal["turnstile", "recaptcha", "hcaptcha", "yandex"] | None = None
    CAPTCHA_SECRET: SecretStr | None = None
    CAPTCHA_VERIFY_URL: str | None = None  # unset: the provider's own siteverify URL
    CAPTCHA_TIMEOUT_SECONDS: float = Field(default=5.0, gt=0, le=60)
    CAPTCHA_MIN_SCORE: float = Field(default=0.5, ge=0, le=1)  # reCAPTCHA v3 scores only
    # The storage budget: posts are answered 503 rather than stored while the SQLite database's
    # disk has less free space than this (0 = off), or once a form added this many rows,
    # spam included, in the last hour (0 = off; works on PostgreSQL too).
    STORAGE_MIN_FREE_MB: int = Field(default=512, ge=0)
    STORAGE_MAX_SUBMISSIONS_PER_FORM_HOUR: int = Field(default=5000, ge=0)

    # --- privacy ---
    RETENTION_DAYS: int = Field(default=30, ge=0)  # 0 keeps personal data forever

    # --- Bitrix24 client ---
    ORIGINATOR_ID: str = Field(default="b24-form-gateway", min_length=1, max_length=100)
    BITRIX_TIMEOUT_SECONDS: float = Field(default=65.0, gt=0)
    BITRIX_CONNECT_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    BITRIX_RATE_PER_SECOND: float = Field(default=2.0, gt=0)
    BITRIX_BURST: int = Field(default=50, ge=1)
    # The portal's execution budget per method over 10 minutes (docs example: 480 s); a method
    # that nears it is paused until the portal's reset time; 0 = only react to refusals.
    BITRIX_OPERATING_BUDGET_SECONDS: float = Field(default=480.0, ge=0)

    # --- delivery worker ---
    WORKER_POLL_SECONDS: float = Field(default=1.0, gt=0)
    WORKER_BATCH_SIZE: int = Field(default=50, ge=1, le=50)
    # After an answer is lost, the portal may still be running the request (PHP goes on to the
    # end, up to its 60 s request limit): neither look up nor create again before this many
    # seconds from when it was sent. Also how soon a crashed worker's claims come back.
    UNKNOWN_OUTCOME_WAIT_SECONDS: float = Field(default=70.0, gt=0)
    # The largest batch request body; bigger batches are split (proxies refuse large bodies).
    BATCH_MAX_BYTES: int = Field(default=512 * 1024, ge=16 * 1024)
    # The quote's identity marker: a custom string field of the portal (quotes have no
    # ORIGIN_ID). `check --create-fields` creates it; CREATE_MARKER_FIELDS lets the worker.
    QUOTE_ORIGIN_FIELD: str = "UF_CRM_B24FG_ORIGIN"
    CREATE_MARKER_FIELDS: bool = True
    # While the portal is down the worker probes it with one cheap call, the interval growing
    # to this many seconds: the longest wait between its return and the first delivery.
    BREAKER_MAX_PROBE_SECONDS: float = Field(default=2.0, gt=0, le=600)
    RETRY_BASE_SECONDS: float = Field(default=5.0, ge=0)
    RETRY_MAX_DELAY_SECONDS: float = Field(default=900.0, ge=0)
    RETRY_HORIZON_SECONDS: float = Field(default=3 * 24 * 3600.0, gt=0)
    RETRY_MAX_ATTEMPTS: int = Field(default=1000, ge=1)

    # --- alerts (app/alerts.py): each channel is off until configured ---
    # Portal users told through im.notify.system.add (the webhook needs the `im` scope).
    ALERT_BITRIX_USER_IDS: Annotated[tuple[int, ...], NoDecode] = ()
    ALERT_SMTP_HOST: str | None = None
    ALERT_SMTP_PORT: int = Field(default=587, ge=1, le=65535)
    ALERT_SMTP_USER: str | None = None
    ALERT_SMTP_PASSWORD: SecretStr | None = None
    ALERT_SMTP_FROM: str | None = None
    ALERT_SMTP_TO: Annotated[tuple[str, ...], NoDecode] = ()
    ALERT_SMTP_STARTTLS: bool = True
    # Slack-style incoming webhook or a Telegram bot's sendMessage URL; a secret (it holds a
    # token). ALERT_WEBHOOK_CHAT_ID is Telegram's chat_id, sent only when set.
    ALERT_WEBHOOK_URL: SecretStr | None = None
    ALERT_WEBHOOK_CHAT_ID: str | None = None
    # Delivery counts as stalled when a due submission has waited this long to be tried.
    ALERT_STALL_MINUTES: float = Field(default=15.0, gt=0)
    ALERT_MAX_PER_HOUR: int = Field(default=20, ge=1)  # per channel; the excess is summarised

    @field_validator("ALLOWED_ORIGINS", "TRUSTED_PROXIES", "ALERT_SMTP_TO", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("ALERT_BITRIX_USER_IDS", mode="before")
    @classmethod
    def _split_user_ids(cls, value: object) -> object:
        if value is None:
            return ()
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
            if not all(item.isdigit() and int(item) > 0 for item in items):
                raise ValueError("must be a comma list of portal user ids, like 1,7")
            return tuple(int(item) for item in items)
        return value

    @field_validator("ALERT_WEBHOOK_URL", mode="before")
    @classmethod
    def _check_alert_webhook(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        # The messages never repeat the URL: it holds a token.
        if not isinstance(raw, str):
            raise ValueError("must be an https:// URL")
        parts = urlsplit(raw.strip())
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("plain http is refused except on loopback; use https://")
        return raw.strip()

    @model_validator(mode="after")
    def _check_alert_smtp(self) -> Settings:
        if self.ALERT_SMTP_HOST is not None and (
            not self.ALERT_SMTP_FROM or not self.ALERT_SMTP_TO
        ):
            raise ValueError("ALERT_SMTP_FROM and ALERT_SMTP_TO are required with ALERT_SMTP_HOST")
        if self.ALERT_SMTP_PASSWORD is not None and self.ALERT_SMTP_USER is None:
            raise ValueError("ALERT_SMTP_USER is required with ALERT_SMTP_PASSWORD")
        return self

    @field_validator("ALLOWED_ORIGINS")
    @classmethod
    def _check_origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(origin_setting(origin) for origin in value))

    @field_validator("TRUSTED_PROXIES")
    @classmethod
    def _check_proxies(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        networks = []
        for item in value:
            try:
                networks.append(str(ipaddress.ip_network(item, strict=False)))
            except ValueError:
                raise ValueError(f"{item[:60]!r} is not an IP address or CIDR block") from None
        return tuple(networks)

    @field_validator("CAPTCHA_VERIFY_URL")
    @classmethod
    def _check_verify_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("plain http is refused except on loopback; use https://")
        return value.strip()

    @model_validator(mode="after")
    def _check_captcha(self) -> Settings:
        if self.CAPTCHA_PROVIDER is not None and self.CAPTCHA_SECRET is None:
            raise ValueError("CAPTCHA_SECRET is required when CAPTCHA_PROVIDER is set")
        return self

    @field_validator("ADMIN_TOKEN")
    @classmethod
    def _check_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < ADMIN_TOKEN_MIN_LENGTH:
            # The message never repeats the token.
            raise ValueError(
                f"must be at least {ADMIN_TOKEN_MIN_LENGTH} characters; make one with "
                + NEW_TOKEN_COMMAND
            )
        return value

    @field_validator("ADMIN_TIMEZONE")
    @classmethod
    def _check_admin_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value.strip())
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r}: use an IANA name such as UTC or Europe/Moscow"
            ) from None
        return value.strip()

    @model_validator(mode="after")
    def _check_sandbox(self) -> Settings:
        if self.B24_WEBHOOK_URL is None and not self.SANDBOX and not is_loopback_host(self.HOST):
            # No "Value error" prefix: this is the whole one-line reason `serve` prints.
            raise PydanticCustomError(
                "sandbox_not_local",
                "sandbox mode refused: B24_WEBHOOK_URL is not set and HOST={host} is not a "
                "loopback address, so anyone reaching it could read every lead at /sandbox; set "
                "B24_WEBHOOK_URL to deliver to your portal, or HOST=127.0.0.1, or SANDBOX=true "
                "to expose the sandbox on purpose",
                {"host": self.HOST},
            )
        if self.B24_WEBHOOK_URL is not None and self.SANDBOX:
            raise PydanticCustomError(
                "sandbox_with_webhook",
                "SANDBOX=true and B24_WEBHOOK_URL are both set: unset SANDBOX to deliver to "
                "the portal, or B24_WEBHOOK_URL for the sandbox",
            )
        return self

    @field_validator("B24_WEBHOOK_URL", mode="before")
    @classmethod
    def _check_webhook(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if not isinstance(raw, str):
            raise ValueError("must be a URL")
        raw = raw.strip()
        parts = urlsplit(raw)
        # The messages below never repeat the URL: it holds the webhook secret.
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("must be an https:// URL like https://PORTAL/rest/USER_ID/SECRET/")
        if parts.scheme == "http" and not is_loopback_host(parts.hostname):
            raise ValueError("plain http is refused except on loopback; use https://")
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) < 3 or segments[0] != "rest" or not segments[1].isdigit():
            raise ValueError("must look like https://PORTAL/rest/USER_ID/SECRET/")
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query string or fragment")
        return raw if raw.endswith("/") else raw + "/"

    @field_validator("QUOTE_ORIGIN_FIELD")
    @classmethod
    def _check_quote_field(cls, value: str) -> str:
        if not _USER_FIELD_RE.match(value):
            raise ValueError("must be a custom field code like UF_CRM_B24FG_ORIGIN (A-Z, 0-9, _)")
        return value

    @field_validator("RATE_LIMIT_PER_IP")
    @classmethod
    def _check_rate(cls, value: str) -> str:
        if value.strip() == "0" or _RATE_RE.match(value):
            return value.strip()
        raise ValueError("must be like 30/minute (second, minute, hour or day), or 0 for off")

    @field_validator("RATE_LIMIT_STORAGE_URL", mode="before")
    @classmethod
    def _check_rate_storage(cls, value: object) -> object:
        raw = value.get_secret_value() if isinstance(value, SecretStr) else value
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        # The message never repeats the URL: it may hold a password.
        if not isinstance(raw, str) or urlsplit(raw.strip()).scheme not in _REDIS_SCHEMES:
            raise ValueError("must be a Redis URL: redis://HOST:6379/0, rediss://… or unix://…")
        return raw.strip()

    @field_validator("DATABASE_URL")
    @classmethod
    def _check_database(cls, value: str) -> str:
        value = value.strip()
        # What hosting platforms hand out (postgres://, postgresql://) and plain sqlite:// name
        # the same databases: use the async drivers the gateway runs on.
        for given, driver in _DATABASE_SCHEMES.items():
            if value.startswith(given):
                value = driver + value.removeprefix(given)
                break
        if value.startswith("postgresql+asyncpg://") and "sslmode=" in value:
            # libpq's sslmode (in every platform's URL) is asyncpg's ssl.
            parts = urlsplit(value)
            query = [
                ("ssl" if key == "sslmode" else key, item)
                for key, item in parse_qsl(parts.query, keep_blank_values=True)
            ]
            value = urlunsplit(parts._replace(query=urlencode(query)))
        if not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            # The message never repeats the URL: it may hold a password.
            raise ValueError(
                "must start with postgresql:// (or postgres://, postgresql+asyncpg://) or "
                "sqlite:/// (or sqlite+aiosqlite:///)"
            )
        return value

    @field_validator("LOG_LEVEL", "LOG_FORMAT", mode="before")
    @classmethod
    def _any_case(cls, value: object, info: ValidationInfo) -> object:
        if isinstance(value, str):
            value = value.strip()
            return value.upper() if info.field_name == "LOG_LEVEL" else value.lower()
        return value

    @field_validator("FORMS_FILE")
    @classmethod
    def _check_forms_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @property
    def sandbox(self) -> bool:
        """True when no webhook is configured: deliveries go to the built-in emulator."""
        return self.B24_WEBHOOK_URL is None

    @property
    def sandbox_local_only(self) -> bool:
        """The sandbox is on because HOST is loopback, not by SANDBOX=true: it then answers
        only requests that come from this machine and name it (a rebound DNS name does not)."""
        return self.sandbox and not self.SANDBOX

    @property
    def webhook_host(self) -> str:
        """The portal host (not secret), for logs and the status page."""
        if self.B24_WEBHOOK_URL is None:
            return "sandbox"
        return urlsplit(self.B24_WEBHOOK_URL.get_secret_value()).hostname or "?"

    @classmethod
    def load(cls, **overrides: object) -> Settings:
        """Build the settings; a bad value raises SettingsError naming the variable."""
        try:
            return cls(**overrides)  # type: ignore[arg-type]
        except ValidationError as exc:
            lines = []
            for err in exc.errors(include_url=False, include_input=False):
                name = ".".join(str(p) for p in err["loc"])
                message = err["msg"].removeprefix("Value error, ")
                # A check across settings names its variables in its message.
                lines.append(f"{name}: {message}" if name else message)
            raise SettingsError("invalid setting: " + "; ".join(lines)) from None
