"""The Bitrix24 REST client: calls, batches, error classes, the request rate limiter."""

from app.bitrix.client import (
    MAX_BATCH_COMMANDS,
    BatchResult,
    BitrixClient,
    batch_body_bytes,
)
from app.bitrix.encoding import Ref, command, encode_params
from app.bitrix.errors import (
    BitrixError,
    ConfigError,
    NotExecuted,
    OperationTimeLimit,
    OutcomeUnknown,
    PermanentError,
    PortalMoved,
    RateLimited,
    Refused,
    RejectedError,
    TransientError,
    Unavailable,
    Unreachable,
    classify,
)

__all__ = [
    "MAX_BATCH_COMMANDS",
    "BatchResult",
    "BitrixClient",
    "BitrixError",
    "ConfigError",
    "NotExecuted",
    "OperationTimeLimit",
    "OutcomeUnknown",
    "PermanentError",
    "PortalMoved",
    "RateLimited",
    "Ref",
    "Refused",
    "RejectedError",
    "TransientError",
    "Unavailable",
    "Unreachable",
    "batch_body_bytes",
    "classify",
    "command",
    "encode_params",
]
