"""Injected transport faults (bitrix24-api.md §2.3, §3, §11.1): outages and random failures answered
before anything runs, slow answers, and answers lost after the call was committed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

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

    def update(self, changes: Mapping[str, object]) -> None:
        """Apply a partial update; omitted keys keep their value. Raises ValueError."""
        unknown = set(changes) - set(asdict(self))
        if unknown:
            raise ValueError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        if "fail_methods" in changes:
            self.fail_methods = _method_failures(changes["fail_methods"])
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

    def snapshot(self) -> dict[str, object]:
        return asdict(self)

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


def _number(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    return float(value)
