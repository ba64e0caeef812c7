"""The REST error answer: one exception carrying Bitrix24's HTTP status, `error` code and text
(docs/bitrix24.md §2.3, §3). Methods raise it; the dispatcher turns it into the response body.
"""

from __future__ import annotations


class RestError(Exception):
    """A failed call: HTTP `status` with `{"error": code, "error_description": description}`."""

    def __init__(self, status: int, code: str, description: str) -> None:
        super().__init__(f"{status} {code}: {description}")
        self.status = status
        self.code = code
        self.description = description

    def body(self) -> dict[str, object]:
        return {"error": self.code, "error_description": self.description}


def crm_error(description: str) -> RestError:
    """A legacy crm.* data problem: HTTP 400 with an empty `error` code (§2.3)."""
    return RestError(400, "", description)


def core_error(description: str) -> RestError:
    """A deeper layer's failure surfaced as `ERROR_CORE` (§3: e-mail check, tracking)."""
    return RestError(400, "ERROR_CORE", description)


def invalid_credentials() -> RestError:
    # 401 as seen live; the docs say 403 (§3).
    return RestError(401, "INVALID_CREDENTIALS", "Invalid request credentials")


def wrong_auth() -> RestError:
    return RestError(401, "NO_AUTH_FOUND", "Wrong authorization data")


def insufficient_scope() -> RestError:
    return RestError(
        401,
        "insufficient_scope",
        "The request requires higher privileges than provided by the webhook token",
    )


def method_not_found() -> RestError:
    return RestError(404, "ERROR_METHOD_NOT_FOUND", "Method not found!")


def query_limit_exceeded() -> RestError:
    return RestError(503, "QUERY_LIMIT_EXCEEDED", "Too many requests")


def operation_time_limit() -> RestError:
    return RestError(429, "OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.")


def batch_length_exceeded() -> RestError:
    return RestError(400, "ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded")


def batch_method_not_allowed() -> RestError:
    return RestError(405, "ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage")


def internal_error() -> RestError:
    return RestError(500, "INTERNAL_SERVER_ERROR", "Internal server error")
