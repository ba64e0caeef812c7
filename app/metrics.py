"""Prometheus metrics: one registry per app, the metric families, and the /metrics exposition.

A leaf module like settings: the intake, the worker and the Bitrix client record into a
`Metrics` object handed to them by main.py; labels never hold personal data or secrets.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    """The gateway's metrics, in a registry of their own (tests run many apps in one process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.submissions = Counter(
            "gateway_submissions_received",
            "Form posts by form and outcome (accepted, spam, invalid, rejected).",
            ["form", "outcome"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "gateway_queue_depth", "Stored submissions by status.", ["status"], registry=r
        )
        self.oldest_undelivered = Gauge(
            "gateway_oldest_undelivered_age_seconds",
            "Age of the oldest submission not yet delivered (0 when none).",
            registry=r,
        )
        self.deliveries = Counter(
            "gateway_deliveries",
            "Delivery attempts by result (delivered, retry, failed).",
            ["result"],
            registry=r,
        )
        self.portal_requests = Counter(
            "gateway_portal_requests",
            "HTTP requests to the Bitrix24 portal by REST method and outcome.",
            ["method", "status"],
            registry=r,
        )
        self.portal_latency = Histogram(
            "gateway_portal_request_duration_seconds",
            "Latency of portal requests.",
            ["method"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 65),
            registry=r,
        )
        self.portal_errors = Counter(
            "gateway_portal_errors",
            "Portal errors by family (config, rejected, transient) and Bitrix24 error code.",
            ["kind", "code"],
            registry=r,
        )
        self.breaker_open = Gauge(
            "gateway_portal_breaker_open",
            "1 while the portal is down and the worker only probes it, else 0.",
            registry=r,
        )
        self.breaker_probes = Counter(
            "gateway_portal_breaker_probes",
            "Probes of a portal that was down, by result (down, up).",
            ["result"],
            registry=r,
        )
        self.portal_moves = Counter(
            "gateway_portal_moved",
            "Redirects from a renamed portal that were followed (update B24_WEBHOOK_URL).",
            registry=r,
        )
        self.captcha = Counter(
            "gateway_captcha_verifications",
            "Captcha verdicts by result (passed, failed, unavailable) and reason; unavailable "
            "ones (timeout, unreachable, 5xx) were accepted unverified.",
            ["result", "reason"],
            registry=r,
        )
        self.storage_refused = Counter(
            "gateway_storage_refused",
            "Posts answered 503 by the storage budget, by form and reason (disk: free space "
            "below STORAGE_MIN_FREE_MB; form_hour: STORAGE_MAX_SUBMISSIONS_PER_FORM_HOUR).",
            ["form", "reason"],
            registry=r,
        )
        self.storage_free = Gauge(
            "gateway_storage_free_bytes",
            "Free space on the disk holding the SQLite database (SQLite with a watermark only).",
            registry=r,
        )
        self.limiter_wait = Counter(
            "gateway_rate_limiter_wait_seconds",
            "Time spent waiting for the client-side portal rate limiter.",
            registry=r,
        )
        self.rate_limit_fallback = Counter(
            "gateway_rate_limit_fallback",
            "Per-client limit checks this process decided alone because the shared store "
            "(RATE_LIMIT_STORAGE_URL) did not answer.",
            registry=r,
        )
        self.rate_limit_active_evictions = Counter(
            "gateway_rate_limit_active_evictions",
            "Clients forgotten by the per-client limit while their count still mattered "
            "(RATE_LIMIT_MAX_CLIENTS too small for the clients of one window).",
            registry=r,
        )

        self.alerts = Counter(
            "gateway_alerts",
            "Alerts by channel (bitrix, email, webhook) and result (sent, failed, suppressed: "
            "held back by ALERT_MAX_PER_HOUR).",
            ["channel", "result"],
            registry=r,
        )

    # The Bitrix client's observer interface (app.bitrix.client.RequestObserver).
    def portal_request(self, method: str, status: str, seconds: float) -> None:
        self.portal_requests.labels(method=method, status=status).inc()
        self.portal_latency.labels(method=method).observe(seconds)

    def limiter_waited(self, seconds: float) -> None:
        self.limiter_wait.inc(seconds)

    def portal_error(self, kind: str, code: str) -> None:
        self.portal_errors.labels(kind=kind, code=code).inc()

    def portal_moved(self) -> None:
        self.portal_moves.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
