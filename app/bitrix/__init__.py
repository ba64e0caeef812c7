"""The Bitrix24 REST client: calls, batches, error classes, the request rate limiter."""

from app.bitrix.client import MAX_BATCH_COMMANDS, BatchResult, BitrixClient
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
    RejectedError,
    TransientError,
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
    "RejectedError",
    "TransientError",
    "Unreachable",
    "classify",
    "command",
    "encode_params",
]
