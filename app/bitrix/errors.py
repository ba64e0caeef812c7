"""The Bitrix24 error tree, grouped by what a failure proves, and the function that classifies an
answer (§0 fact 18, §3).

    BitrixError
    ├── TransientError          retry later
    │   ├── NotExecuted         nothing ran: resending cannot duplicate
    │   │   ├── Unreachable         no connection could be made
    │   │   ├── RateLimited         QUERY_LIMIT_EXCEEDED
    │   │   ├── OperationTimeLimit  OPERATION_TIME_LIMIT, one method
    │   │   ├── Unavailable         any other 503 (JSON or a proxy's page)
    │   │   └── Refused             a whole request refused in front of the portal: an HTML
    │   │                           page of a 4xx status (proxy, WAF), 413, 414; split and retry
    │   └── OutcomeUnknown      it may have run: `settled` says whether the portal has finished
    │                           (its own answer came back) or may still be running it
    └── PermanentError          retrying the same thing cannot help
        ├── ConfigError         webhook, credentials, scope, method, plan (the portal's JSON)
        │   └── PortalMoved     a redirect to a host that is not a Bitrix24 portal
        └── RejectedError       the portal refused this data (a field, a value, access)

Dispatch is on the `error` code first, the HTTP status second; a body that is not the
portal's JSON never proves a configuration problem.

§ numbers refer to the sections of docs/bitrix24.md.
"""

from __future__ import annotations

import re
from typing import Any


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


class Unavailable(NotExecuted):
    """HTTP 503 (the portal or a proxy in front could not handle the request, RFC 9110)."""


class Refused(NotExecuted):
    """Refused in front of the portal before anything ran: an HTML page with a 4xx status
    (a proxy or WAF), or 413/414 (too large). A batch that gets this is split and retried."""


class OutcomeUnknown(TransientError):
    """The request may have been executed; look records up before creating them again.

    `settled`: the portal finished the request (its own error answer arrived), so a look-up
    now sees everything it did. Otherwise the answer was lost on the way (timeout, dropped
    connection, a proxy's 502/504): PHP may still be running the request for up to its
    60 s limit, and a look-up must wait (§0 fact 15).
    """

    def __init__(self, description: str, *, settled: bool = False, **kwargs: Any) -> None:
        super().__init__(description, **kwargs)
        self.settled = settled


class PermanentError(BitrixError):
    """Retrying the same request cannot succeed."""


class ConfigError(PermanentError):
    """The webhook, its scopes or the portal need an operator's attention."""


class PortalMoved(ConfigError):
    """The portal redirects somewhere that is not a Bitrix24 portal; the webhook (a secret in
    the path) is not sent there (§1.4)."""


class RejectedError(PermanentError):
    """The portal rejected the data of this request."""


# §3: codes whose meaning does not depend on the HTTP status.
_RATE_CODES = frozenset({"QUERY_LIMIT_EXCEEDED"})
_TIME_CODES = frozenset({"OPERATION_TIME_LIMIT"})
_NOT_RUN_CODES = frozenset({"OVERLOAD_LIMIT", "expired_token"})
_UNKNOWN_CODES = frozenset({"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"})
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
# A database failure inside the portal (restexception.php turns SqlQueryException into
# ERROR_CORE "SQL query error!"): the write may or may not have been committed.
_SQL_ERROR = re.compile(r"sql query error", re.IGNORECASE)


def classify(
    code: str | None,
    description: str,
    *,
    http_status: int | None,
    excerpt: str | None = None,
    method: str | None = None,
    reset_at: float | None = None,
    portal_json: bool = True,
) -> BitrixError:
    """Turn an error answer (a whole call's, or one batch command's) into its error class.

    `http_status` is None for a command inside a batch (sub-call statuses are not reported,
    §5.3). `portal_json` is False when the body was not the portal's JSON
    (an HTML page from a proxy, a WAF, nginx).
    """
    cls, settled = _class_for(code, description, http_status, portal_json=portal_json)
    error = cls(description, code=code, http_status=http_status, excerpt=excerpt, method=method)
    if isinstance(error, OutcomeUnknown):
        error.settled = settled
    if isinstance(error, OperationTimeLimit):
        error.reset_at = reset_at
    return error


def _class_for(
    code: str | None, description: str, http_status: int | None, *, portal_json: bool
) -> tuple[type[BitrixError], bool]:
    """The class, and for OutcomeUnknown whether the portal had finished (`settled`)."""
    if not portal_json:
        # Not the portal's own answer: never a configuration or data verdict (§0 fact 18).
        status = http_status or 502
        if status == 503:
            return Unavailable, False
        if 400 <= status < 500:
            return Refused, False
        return OutcomeUnknown, False  # a proxy's 5xx (or 200): PHP may still be running
    if code in _RATE_CODES:
        return RateLimited, False
    if code in _TIME_CODES:
        return OperationTimeLimit, False
    if http_status == 503 or code in _NOT_RUN_CODES:
        return Unavailable, False
    if code == "ERROR_CORE" and _SQL_ERROR.search(description):
        return OutcomeUnknown, True
    if code in _UNKNOWN_CODES:
        return OutcomeUnknown, True
    if code in _CONFIG_CODES:
        return ConfigError, False
    if code == "ACCESS_DENIED" and http_status in (401, 403):
        # The system-level denial (plan, subscription); crm.item's ACCESS_DENIED is a 400.
        return ConfigError, False
    if http_status is not None:
        if http_status in (413, 414):
            return Refused, False
        if http_status == 429:
            return Unavailable, False
        if http_status >= 500:
            # The portal's own JSON error answer: it has finished the request.
            return OutcomeUnknown, http_status == 500
        if http_status in (401, 403, 404, 405, 410):
            return ConfigError, False
    # "" and ERROR_CORE on crm.* are data problems (§2.3), as is anything else left.
    return RejectedError, False
