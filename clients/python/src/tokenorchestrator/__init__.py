"""A client of Token Orchestrator, the lease server for pools of API keys.

    from tokenorchestrator import Client

    with Client("http://127.0.0.1:8080") as client:
        with client.claim("openai", labels={"tier": "paid"}, wait=30) as lease:
            call_the_api(lease.secret)
"""

from ._async_client import AsyncClient, AsyncLease
from ._client import Client, Lease
from ._errors import (
    ERRORS_BY_CODE,
    ApiError,
    BadRequestError,
    ConflictError,
    DatabaseUnavailableError,
    DuplicateNameError,
    DuplicateSecretError,
    ForbiddenError,
    IdempotencyKeyReusedError,
    InternalServerError,
    KeyNotFoundError,
    LeaseLost,
    LeaseMismatchError,
    LeaseTokenRequiredError,
    NoFreeKeyError,
    NotFoundError,
    PoolNotEmptyError,
    SecretsNotConfiguredError,
    SecretUnavailableError,
    ServiceUnavailableError,
    ShuttingDownError,
    TooManyWaitersError,
    UnauthorizedError,
    UnknownParameterError,
    UnknownPoolError,
)
from ._models import DeletedPool, ImportResult, Key, KeyPage, Pool, PoolStats, PoolStatus, SkippedKey, Stats
from ._protocol import MAX_IMPORT, MAX_WAIT, Duration, LabelFilter, RetryPolicy, new_idempotency_key
from ._retry_after import MAX_COOLDOWN, cooldown_from_retry_after, parse_retry_after

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncLease",
    "Client",
    "Lease",
    "RetryPolicy",
    "Duration",
    "LabelFilter",
    "MAX_IMPORT",
    "MAX_WAIT",
    "MAX_COOLDOWN",
    "new_idempotency_key",
    "cooldown_from_retry_after",
    "parse_retry_after",
    "Key",
    "KeyPage",
    "Pool",
    "PoolStats",
    "PoolStatus",
    "Stats",
    "SkippedKey",
    "ImportResult",
    "DeletedPool",
    "ERRORS_BY_CODE",
    "ApiError",
    "BadRequestError",
    "ConflictError",
    "DatabaseUnavailableError",
    "DuplicateNameError",
    "DuplicateSecretError",
    "ForbiddenError",
    "IdempotencyKeyReusedError",
    "InternalServerError",
    "KeyNotFoundError",
    "LeaseLost",
    "LeaseMismatchError",
    "LeaseTokenRequiredError",
    "NoFreeKeyError",
    "NotFoundError",
    "PoolNotEmptyError",
    "SecretsNotConfiguredError",
    "SecretUnavailableError",
    "ServiceUnavailableError",
    "ShuttingDownError",
    "TooManyWaitersError",
    "UnauthorizedError",
    "UnknownParameterError",
    "UnknownPoolError",
]
