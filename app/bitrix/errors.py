"""The Bitrix24 error tree, grouped by cause, and the one function that classifies an answer.

    BitrixError
    ├── TransientError          retry later with backoff
    │   ├── NotExecuted         the portal refused before running anything (safe to resend)
    │   │   ├── Unreachable         no connection could be made
    │   │   ├── RateLimited         QUERY_LIMIT_EXCEEDED (HTTP 503)
    │   │   └── OperationTimeLimit  OPERATION_TIME_LIMIT (HTTP 429), per method
    │   └── OutcomeUnknown      the call may have run: timeout, dropped connection, 5xx, non-JSON
    └── PermanentError          retrying the same thing cannot help
        ├── ConfigError         webhook, credentials, scope, method, plan
        │   └── PortalMoved     the portal answers 302: B24_WEBHOOK_URL is stale (§1.4)
        └── RejectedError       the portal refused this data (a field, a value, access)

Dispatch is on the `error` code first, the HTTP status second (bitrix24-api.md §0.3, §3).
"""

from __future__ import annotations


class BitrixError(Exception):
    """A Bitrix24 call did not succeed."""

    def __init__(
        self,
        description: str,
        *,
        code: str | None = None,
        http_status: int | None = None,
        excerpt: str | None = None,
        method: str | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.code = code
        self.http_status = http_status
        self.excerpt = excerpt
        self.method = method

    @property
    def label(self) -> str:
        """A short stable name for logs and metrics: the error code, else the class."""
        return self.code or type(self).__name__


class TransientError(BitrixError):
    """Worth retrying later."""


class NotExecuted(TransientError):
    """The portal refused the request before running it: resending cannot duplicate."""


class Unreachable(NotExecuted):
    """No connection to the portal could be made; nothing was sent."""


class RateLimited(NotExecuted):
    """QUERY_LIMIT_EXCEEDED: the portal's request bucket overflowed (§4.1)."""


class OperationTimeLimit(NotExecuted):
    """OPERATION_TIME_LIMIT: this method is blocked for a while (§4.2).

    `reset_at` (unix seconds) is when the portal unblocks it, when known.
    """

    reset_at: float | None = None


class OutcomeUnknown(TransientError):
    """The request may have been executed; look records up before creating them again."""


class PermanentError(BitrixError):
    """Retrying the same request cannot succeed."""


class ConfigError(PermanentError):
    """The webhook, its scopes or the portal need an operator's attention."""


class PortalMoved(ConfigError):
    """The portal was renamed and redirects (§1.4); the configured webhook URL must change."""


class RejectedError(PermanentError):
    """The portal rejected the data of this request."""


# §3: codes whose meaning does not depend on the HTTP status.
_RATE_CODES = frozenset({"QUERY_LIMIT_EXCEEDED"})
_TIME_CODES = frozenset({"OPERATION_TIME_LIMIT"})
_TRANSIENT_UNKNOWN_CODES = frozenset(
    {"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER", "OVERLOAD_LIMIT", "expired_token"}
)
_CONFIG_CODES = frozenset(
    {
        "ERROR_METHOD_NOT_FOUND",
        "NO_AUTH_FOUND",
        "INVALID_CREDENTIALS",
        "insufficient_scope",
        "INVALID_REQUEST",
        "invalid_token",
        "user_access_error",
        "PAYMENT_REQUIRED",
        "WRONG_AUTH_TYPE",
        "PORTAL_DELETED",
        "allowed_only_intranet_user",
        "ERROR_BATCH_LENGTH_EXCEEDED",
        "ERROR_BATCH_METHOD_NOT_ALLOWED",
    }
)


def classify(
    code: str | None,
    description: str,
    *,
    http_status: int | None,
    excerpt: str | None = None,
    method: str | None = None,
    reset_at: float | None = None,
) -> BitrixError:
    """Turn an error answer (a whole call's, or one batch command's) into its error class.

    `http_status` is None for a command inside a batch (§5.3: sub-call statuses are not reported).
    """
    cls = _class_for(code, http_status)
    error = cls(description, code=code, http_status=http_status, excerpt=excerpt, method=method)
    if isinstance(error, OperationTimeLimit):
        error.reset_at = reset_at
    return error


def _class_for(code: str | None, http_status: int | None) -> type[BitrixError]:
    if code in _RATE_CODES:
        return RateLimited
    if code in _TIME_CODES:
        return OperationTimeLimit
    if code in _TRANSIENT_UNKNOWN_CODES:
        return OutcomeUnknown
    if code in _CONFIG_CODES:
        return ConfigError
    if code == "ACCESS_DENIED" and http_status in (401, 403):
        # The system-level denial (plan, subscription); crm.item's ACCESS_DENIED is a 400.
        return ConfigError
    if http_status is not None:
        if http_status == 429 or http_status >= 500:
            return OutcomeUnknown
        if http_status in (401, 403, 404, 405, 410):
            return ConfigError
    # "" and ERROR_CORE on crm.* are data problems (§2.3), as is anything else left.
    return RejectedError
