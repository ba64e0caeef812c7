"""The Bitrix24 REST client: owns the webhook URL, the HTTP client, the rate limiter and the
parsing of answers into results or classified errors. It never retries: the worker decides.

§ numbers refer to the sections of docs/bitrix24.md.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlsplit

import httpx

from app.bitrix.bucket import PortalBucket
from app.bitrix.errors import (
    BitrixError,
    ConfigError,
    OperationTimeLimit,
    OutcomeUnknown,
    PortalMoved,
    RateLimited,
    RejectedError,
    Unreachable,
    classify,
)
from app.netaddr import is_loopback_host

log = logging.getLogger("app.bitrix")

MAX_BATCH_COMMANDS = 50
RATE_MARGIN = 0.97
OPERATING_MARGIN = 0.9
OPERATION_LIMIT_DEFAULT_SECONDS = 60.0
EXCERPT_CHARS = 300
USER_AGENT = "b24-form-gateway/0.1"
MAX_REDIRECTS = 3
# Cloud portals live at <name>.bitrix24.<tld> (bitrix24.com, .de, .com.br, ...); a redirect is
# followed only there, since the repeated POST carries the webhook secret in its path.
_BITRIX24_HOST = re.compile(r"^(?:[a-z0-9-]+\.)+bitrix24\.[a-z]{2,3}(?:\.[a-z]{2})?$")

BeforeSend = Callable[[], Awaitable[None]]

JSONValue = object


@dataclass(slots=True)
class BatchResult:
    """What a batch produced: results and classified errors by command key.

    A command in neither map was not executed (a `halt=1` batch stopped before it).
    """

    results: dict[str, JSONValue] = field(default_factory=dict)
    errors: dict[str, BitrixError] = field(default_factory=dict)


class RequestObserver(Protocol):
    """Receives one call per portal request (metrics); implemented outside this package."""

    def portal_request(self, method: str, status: str, seconds: float) -> None: ...

    def limiter_waited(self, seconds: float) -> None: ...

    def portal_error(self, kind: str, code: str) -> None: ...

    def portal_moved(self) -> None: ...


def _as_map(value: object) -> dict[str, object]:
    """PHP serialises an empty map as [] and a 0..n-1 keyed map as a list (§5.3)."""
    if isinstance(value, dict):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return {}


class BitrixClient:
    """Calls one portal through its incoming webhook.

    `transport` lets sandbox mode route calls to the in-process emulator (httpx.ASGITransport).
    """

    def __init__(
        self,
        webhook_url: str,
        *,
        timeout_seconds: float = 65.0,
        connect_timeout_seconds: float = 10.0,
        rate_per_second: float = 2.0,
        burst: int = 50,
        operating_budget_seconds: float | None = 480.0,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: RequestObserver | None = None,
    ) -> None:
        self._observer = observer
        # The portal's per-method execution budget over 10 minutes (§4.2; 480 s in the docs'
        # example): a method whose `operating` nears it is paused until `operating_reset_at`,
        # before the portal refuses it with OPERATION_TIME_LIMIT. None: only react to refusals.
        self._operating_budget = operating_budget_seconds
        self._base = webhook_url if webhook_url.endswith("/") else webhook_url + "/"
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds, connect=connect_timeout_seconds),
            headers={"Accept": "application/json", "User-Agent": USER_AGENT},
            # Never follow: a redirected POST loses its body; it means a moved portal (§1.4).
            follow_redirects=False,
            transport=transport,
        )
        # The portal's own leaky bucket (§4.1): `burst` at once, then `rate_per_second`. The
        # portal counts a request when it arrives, so network jitter can make its count run
        # ahead of ours: keep a margin below both numbers. It starts full: a worker never
        # knows what was sent before it (another worker, another integration).
        capacity = max(1, min(burst - 1, int(burst * 0.9)))
        self._bucket = PortalBucket(rate=rate_per_second * RATE_MARGIN, capacity=capacity)
        # OPERATION_TIME_LIMIT blocks one method until a reset time (unix seconds, §4.2).
        self._blocked_until: dict[str, float] = {}
        self._operating_reset_at: dict[str, float] = {}
        # The host a renamed portal redirected us to (§1.4); None until then.
        self.moved_to: str | None = None
        self.last_success_at: float | None = None
        self.last_failure_at: float | None = None
        self.last_error_code: str | None = None

    async def aclose(self) -> None:
        await self._http.aclose()

    async def call(
        self,
        method: str,
        params: Mapping[str, object] | None = None,
        *,
        before_send: BeforeSend | None = None,
    ) -> JSONValue:
        """One REST method; returns its `result`, raises a BitrixError subclass otherwise.

        `before_send` runs after the rate limiter lets the request go, just before it is sent.
        """
        body = await self._post(method, dict(params or {}), before_send=before_send)
        return body.get("result")

    async def batch(
        self, commands: Mapping[str, str], *, halt: bool, before_send: BeforeSend | None = None
    ) -> BatchResult:
        """Run up to 50 commands in one request (§5); per-command errors are
        classified alone."""
        if not commands:
            return BatchResult()
        if len(commands) > MAX_BATCH_COMMANDS:
            raise ValueError(f"a batch takes at most {MAX_BATCH_COMMANDS} commands")
        body = await self._post(
            "batch", batch_payload(commands, halt=halt), before_send=before_send
        )
        outer = body.get("result")
        outer_map = _as_map(outer)
        results = _as_map(outer_map.get("result"))
        raw_errors = _as_map(outer_map.get("result_error"))
        times = _as_map(outer_map.get("result_time"))
        out = BatchResult(results={k: v for k, v in results.items() if k in commands})
        for key, raw in raw_errors.items():
            method = commands.get(key, "").split("?", 1)[0] or None
            error = raw if isinstance(raw, dict) else {}
            reset = self._operating_reset_at.get(method or "")
            classified = classify(
                _code(error.get("error")),
                str(error.get("error_description") or "batch command failed"),
                http_status=None,
                excerpt=_excerpt(json.dumps(error, ensure_ascii=False)),
                method=method,
                reset_at=reset,
            )
            if not isinstance(classified, RejectedError):
                # A webhook or limit problem reported per command is still the portal's state.
                self._failed(classified)
            out.errors[key] = classified
        for key, item in times.items():
            if method := commands.get(key, "").split("?", 1)[0]:
                self._note_time(method, _as_map(item))
        return out

    def assume_bucket_full(self) -> None:
        """Pace as if the portal's bucket were full (a worker taking over from another)."""
        self._bucket.fill()

    def blocked_until(self, method: str) -> float | None:
        """When the portal unblocks `method` (unix seconds), if it is blocked now (§4.2)."""
        until = self._blocked_until.get(method)
        if until is None or until <= time.time():
            return None
        return until

    async def _post(
        self, method: str, payload: dict[str, object], *, before_send: BeforeSend | None = None
    ) -> dict[str, object]:
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._send(method, payload, before_send=before_send)
            if not 300 <= response.status_code < 400:
                return self._parse(method, response)
            self._follow(method, response)
        raise self._failed(
            PortalMoved(
                "the portal keeps redirecting; check B24_WEBHOOK_URL",
                code="PORTAL_MOVED",
                http_status=302,
                method=method,
            )
        )

    def _follow(self, method: str, response: httpx.Response) -> None:
        """A renamed portal answers 302 with its new address (§1.4): repeat
        the POST there, keeping our webhook path, when the new host is a Bitrix24 portal."""
        location = urlsplit(response.headers.get("location", ""))
        current = urlsplit(self._base)
        host = (location.hostname or "").lower()
        if not location.scheme and not host:
            host, location = current.hostname or "", current  # a relative redirect: same host
        loopback_ok = is_loopback_host(current.hostname) and is_loopback_host(host)
        secure = location.scheme == "https" or (location.scheme == "http" and loopback_ok)
        if not secure or not (_BITRIX24_HOST.match(host) or loopback_ok):
            # The Location is not logged: it may carry a secret; the host alone is safe.
            raise self._failed(
                PortalMoved(
                    f"the portal redirects to {host or 'an unknown place'}, which is not a "
                    "Bitrix24 portal; check B24_WEBHOOK_URL",
                    code="PORTAL_MOVED",
                    http_status=response.status_code,
                    method=method,
                )
            )
        netloc = host if location.port is None else f"{host}:{location.port}"
        new_base = f"{location.scheme}://{netloc}{current.path}"
        if new_base == self._base:
            return
        self._base = new_base
        self.moved_to = netloc
        log.warning(
            "portal.moved",
            extra={
                "old_host": current.hostname,
                "new_host": netloc,
                "detail": "the portal was renamed; update B24_WEBHOOK_URL to the new host",
            },
        )
        if self._observer is not None:
            self._observer.portal_moved()

    async def _send(
        self, method: str, payload: dict[str, object], *, before_send: BeforeSend | None
    ) -> httpx.Response:
        waiting = time.monotonic()
        await self._bucket.acquire()
        if before_send is not None:
            await before_send()
        started = time.monotonic()
        if self._observer is not None:
            self._observer.limiter_waited(started - waiting)
        status = "error"
        try:
            response = await self._http.post(self._base + method, json=payload)
            status = str(response.status_code)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            status = "unreachable"
            error: BitrixError = Unreachable(
                f"cannot connect to the portal ({type(exc).__name__})", method=method
            )
            raise self._failed(error) from None
        except httpx.HTTPError as exc:
            status = "no_answer"
            # Sent, but no complete answer: the portal may have run it (§3).
            error = OutcomeUnknown(
                f"no complete answer from the portal ({type(exc).__name__})",
                method=method,
                settled=False,
            )
            raise self._failed(error) from None
        finally:
            if self._observer is not None:
                self._observer.portal_request(method, status, time.monotonic() - started)
        return response

    def _parse(self, method: str, response: httpx.Response) -> dict[str, object]:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # Proxies, WAFs and overload answer with HTML (§2.3): never the
            # portal's verdict, whatever the status.
            error = classify(
                None,
                f"non-JSON answer (HTTP {status})",
                http_status=status,
                excerpt=_excerpt(response.text),
                method=method,
                portal_json=False,
            )
            raise self._failed(error)
        if status != 200 or "error" in body:
            raise self._failed(
                classify(
                    _code(body.get("error")),
                    str(body.get("error_description") or f"HTTP {status}"),
                    http_status=status,
                    excerpt=_excerpt(response.text),
                    method=method,
                    reset_at=self._operating_reset_at.get(method),
                )
            )
        if method != "batch":  # the outer batch is not metered; its commands are (§4.2)
            self._note_time(method, _as_map(body.get("time")))
        self.last_success_at = time.time()
        return body

    def _note_time(self, method: str, info: Mapping[str, object]) -> None:
        """Keep a method's execution budget in view from its `time` object (§2.1, §4.2)."""
        reset_at = info.get("operating_reset_at")
        if not isinstance(reset_at, int | float):
            return
        self._operating_reset_at[method] = float(reset_at)
        operating = info.get("operating")
        budget = self._operating_budget
        if (
            budget is not None
            and isinstance(operating, int | float)
            and operating + 1e-6 >= budget * OPERATING_MARGIN
            and reset_at > time.time()
        ):
            if self._blocked_until.get(method, 0.0) < reset_at:
                log.warning(
                    "portal.method_paused",
                    extra={"method": method, "operating": operating, "until": reset_at},
                )
            self._blocked_until[method] = max(self._blocked_until.get(method, 0.0), reset_at)

    def _failed(self, error: BitrixError) -> BitrixError:
        self.last_failure_at = time.time()
        self.last_error_code = error.label
        if self._observer is not None:
            self._observer.portal_error(_kind(error), error.label)
        if isinstance(error, RateLimited):
            # The portal's bucket is full (others share it, §4.1): from now on, send at its
            # drain rate, which it never refuses; no slower.
            self._bucket.fill()
        elif isinstance(error, OperationTimeLimit) and error.method:
            reset = error.reset_at
            if reset is None or reset <= time.time():
                reset = time.time() + OPERATION_LIMIT_DEFAULT_SECONDS
            error.reset_at = reset
            self._blocked_until[error.method] = reset
        return error


def batch_payload(commands: Mapping[str, str], *, halt: bool) -> dict[str, object]:
    """The JSON body of a `batch` call."""
    return {"halt": 1 if halt else 0, "cmd": dict(commands)}


def batch_body_bytes(commands: Mapping[str, str], *, halt: bool = True) -> int:
    """How many bytes a batch of these commands sends (for the request size cap)."""
    return len(json.dumps(batch_payload(commands, halt=halt)).encode())


def _kind(error: BitrixError) -> str:
    """The error's family for metrics and alerts: config, rejected or transient."""
    if isinstance(error, ConfigError):
        return "config"
    if isinstance(error, RejectedError):
        return "rejected"
    return "transient"


def _code(value: object) -> str | None:
    if value is None:
        return None
    return str(value)


def _excerpt(text: str) -> str:
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…"
