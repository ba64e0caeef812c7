"""Injected faults (docs/bitrix24.md §2.3, §3, §11.1): outages, proxy pages and redirects answered
before anything runs, SQL errors, slow answers, answers lost after the call was committed, and
requests cut off on arrival that still run later.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from urllib.parse import urlsplit

from app.sandbox.errors import internal_error

# The HTML pages proxies answer with (fixtures/responses.jsonl); clients must survive them.
OUTAGE_HTML = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head><body><center>"
    "<h1>503 Service Temporarily Unavailable</h1></center><hr><center>nginx</center>"
    "</body></html>"
)
ERROR_HTML = (
    "<html><head><title>500 Internal Server Error</title></head><body><center>"
    "<h1>500 Internal Server Error</h1></center><hr><center>nginx</center></body></html>"
)
INTERNAL_ERROR_JSON = json.dumps(internal_error().body(), separators=(",", ":"))
# A failed query surfaces as ERROR_CORE "SQL query error!" with HTTP 500, and inside a batch only
# in result_error (docs/bitrix24.md §0 fact 18, §3: an observed answer, outcome unknown).
SQL_ERROR_STATUS = 500
SQL_ERROR_BODY: dict[str, object] = {"error": "ERROR_CORE", "error_description": "SQL query error!"}


def html_page(status: int) -> str:
    """The nginx-style page a proxy or WAF answers with, "403 Forbidden" and such (§0 fact 18)."""
    try:
        title = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    return (
        f"<html><head><title>{title}</title></head><body><center><h1>{title}</h1></center>"
        "<hr><center>nginx</center></body></html>"
    )


class ResponseLost(Exception):
    """Raised after the status line went out, so the server drops the connection mid-answer."""


@dataclass(frozen=True)
class FaultAnswer:
    """What a failed request gets instead of running: status, content type, body."""

    kind: str
    status: int
    content_type: str
    body: str


@dataclass
class Faults:
    outage: bool = False  # every REST call: 503 nginx HTML, nothing executed
    failure_rate: float = 0.0  # this fraction of REST calls fail before executing
    latency_ms: int = 0  # delay before every REST answer
    lose_responses: int = 0  # the next N executed calls are committed, then the connection drops
    hang_seconds: float = 0.0  # executed calls wait this long before answering
    lose_add_rate: float = 0.0  # this fraction of executed calls that ran an add lose their answer
    # Per method, directly or inside a batch: the next `count` calls fail with this error
    # instead of running: {"crm.deal.add": {"count": 1, "error": "", "description": "…",
    # "status": 400}}. Lets tests fail one step of a package (a rejected trace, a limit).
    fail_methods: dict[str, dict[str, object]] = field(default_factory=dict)
    # The next N executed crm.*.add / crm.*.update commands (direct or inside a batch) fail with
    # ERROR_CORE "SQL query error!": HTTP 500 alone, only result_error inside a batch (§0 fact 18).
    sql_errors: int = 0
    sql_error_rate: float = 0.0  # the same for this fraction of those commands (seeded rng)
    # True: the failing command's record IS written before the error is reported (outcome unknown
    # to the client); False: nothing is written.
    sql_error_commits: bool = True
    # The next N REST requests (whole HTTP requests, a batch is one) get an HTML page of
    # `html_status` (a WAF's "403 Forbidden") before anything runs; `html_error_rate` by chance.
    html_errors: int = 0
    html_status: int = 403
    html_error_rate: float = 0.0
    # A renamed portal (§1.4): "http://host:port". Every REST request whose Host header is not
    # that host:port gets 302 with Location: moved_to + the same path and query; nothing runs.
    # null: off.
    moved_to: str | None = None
    # A request that would run an add (alone or any add inside a batch) is cut off on arrival:
    # the connection closes with no status line. It was admitted by the leaky bucket and still
    # runs `late_seconds` later with the same parameters, like PHP finishing after the client
    # left (§0 fact 15). The next `late_requests` such requests, then this fraction of them.
    late_requests: int = 0
    late_add_rate: float = 0.0
    late_seconds: float = 20.0

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply a partial update; omitted keys keep their value. Raises ValueError."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        validated = self._validate_new_faults(changes)
        failures = _method_failures(changes["fail_methods"]) if "fail_methods" in changes else None
        outage = changes.get("outage", self.outage)
        rate = _number(changes.get("failure_rate", self.failure_rate), "failure_rate")
        latency = _number(changes.get("latency_ms", self.latency_ms), "latency_ms")
        lose = _number(changes.get("lose_responses", self.lose_responses), "lose_responses")
        hang = _number(changes.get("hang_seconds", self.hang_seconds), "hang_seconds")
        lose_rate = _number(changes.get("lose_add_rate", self.lose_add_rate), "lose_add_rate")
        if not isinstance(outage, bool):
            raise ValueError("outage must be true or false")
        if not 0.0 <= rate <= 1.0 or not 0.0 <= lose_rate <= 1.0:
            raise ValueError("failure_rate and lose_add_rate must be between 0 and 1")
        if latency < 0 or lose < 0 or hang < 0:
            raise ValueError("latency_ms, lose_responses and hang_seconds must not be negative")
        if int(latency) != latency or int(lose) != lose:
            raise ValueError("latency_ms and lose_responses must be integers")
        self.outage, self.failure_rate, self.hang_seconds = outage, rate, hang
        self.lose_add_rate = lose_rate
        self.latency_ms, self.lose_responses = int(latency), int(lose)
        if failures is not None:
            self.fail_methods = failures
        for key, value in validated.items():
            setattr(self, key, value)

    def _validate_new_faults(self, changes: Mapping[str, object]) -> dict[str, object]:
        """The SQL, HTML, redirect and late faults after `changes`, validated."""
        counts = {
            key: _count(changes.get(key, getattr(self, key)), key)
            for key in ("sql_errors", "html_errors", "late_requests")
        }
        rates = {
            key: _rate(changes.get(key, getattr(self, key)), key)
            for key in ("sql_error_rate", "html_error_rate", "late_add_rate")
        }
        commits = changes.get("sql_error_commits", self.sql_error_commits)
        if not isinstance(commits, bool):
            raise ValueError("sql_error_commits must be true or false")
        status = changes.get("html_status", self.html_status)
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
            raise ValueError("html_status must be an HTTP status between 200 and 599")
        late = _number(changes.get("late_seconds", self.late_seconds), "late_seconds")
        if late < 0:
            raise ValueError("late_seconds must not be negative")
        moved = _moved_to(changes.get("moved_to", self.moved_to))
        return {
            **counts,
            **rates,
            "sql_error_commits": commits,
            "html_status": status,
            "late_seconds": late,
            "moved_to": moved,
        }

    def snapshot(self) -> dict[str, object]:
        return asdict(self)

    def take_sql_error(self, rng: random.Random) -> bool:
        """Whether this executed add/update fails with "SQL query error!", counting down."""
        if self.sql_errors > 0:
            self.sql_errors -= 1
            return True
        return self.sql_error_rate > 0 and rng.random() < self.sql_error_rate

    def take_late(self, rng: random.Random) -> bool:
        """Whether this admitted request that runs an add is cut off and run late."""
        if self.late_requests > 0:
            self.late_requests -= 1
            return True
        return self.late_add_rate > 0 and rng.random() < self.late_add_rate

    def redirect(self, host: str, path: str) -> str | None:
        """The Location for a request that reached `host` (the Host header) at `path` (with its
        query), or None when there is no move or the request reached the new host."""
        if self.moved_to is None:
            return None
        target = urlsplit(self.moved_to)
        if host.strip().lower() == target.netloc.lower():
            return None
        return self.moved_to.rstrip("/") + path

    def take_method_failure(self, method: str) -> tuple[int, dict[str, object]] | None:
        """The injected error for this call of `method`, counting it down; None to run it."""
        spec = self.fail_methods.get(method)
        if spec is None:
            return None
        remaining = int(spec["count"])  # type: ignore[call-overload]
        if remaining <= 0:
            return None
        spec["count"] = remaining - 1
        body: dict[str, object] = {
            "error": spec["error"],
            "error_description": spec["description"],
        }
        return int(spec["status"]), body  # type: ignore[call-overload]

    def rejection(self, rng: random.Random) -> FaultAnswer | None:
        """The answer for a request refused before it runs, or None to let it through."""
        if self.outage:
            return FaultAnswer("outage", 503, "text/html", OUTAGE_HTML)
        if self.html_errors > 0:
            self.html_errors -= 1
            return FaultAnswer("html", self.html_status, "text/html", html_page(self.html_status))
        if self.html_error_rate > 0 and rng.random() < self.html_error_rate:
            return FaultAnswer("html", self.html_status, "text/html", html_page(self.html_status))
        if self.failure_rate > 0 and rng.random() < self.failure_rate:
            return rng.choice(
                (
                    FaultAnswer("failure", 500, "application/json", INTERNAL_ERROR_JSON),
                    FaultAnswer("failure", 500, "text/html", ERROR_HTML),
                    FaultAnswer("failure", 503, "text/html", OUTAGE_HTML),
                )
            )
        return None


def _method_failures(value: object) -> dict[str, dict[str, object]]:
    if not isinstance(value, dict):
        raise ValueError("fail_methods must be an object of method -> failure")
    failures: dict[str, dict[str, object]] = {}
    for method, spec in value.items():
        if not isinstance(spec, dict):
            raise ValueError(f"fail_methods[{method}] must be an object")
        count = spec.get("count", 1)
        status = spec.get("status", 400)
        if not isinstance(count, int) or count < 0 or not isinstance(status, int):
            raise ValueError(f"fail_methods[{method}]: count and status must be integers")
        failures[str(method).lower()] = {
            "count": count,
            "status": status,
            "error": str(spec.get("error", "")),
            "description": str(spec.get("description", "Injected failure.")),
        }
    return failures


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer")
    return value


def _rate(value: object, name: str) -> float:
    rate = _number(value, name)
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1")
    return rate


def _moved_to(value: object) -> str | None:
    """null, or an absolute http(s) URL of a host without path, query or fragment."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("moved_to must be a URL such as http://127.0.0.1:5678, or null")
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("moved_to must be a URL such as http://127.0.0.1:5678, or null")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("moved_to must name a host only, without a path or query")
    return value.strip()


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)
