"""Errors: every error answer of the server is an ApiError, of the subclass
its problem's ``code`` names."""

from __future__ import annotations

import json
from typing import Any, Dict, Mapping, Optional, Type

from ._retry_after import parse_retry_after

__all__ = [
    "ApiError",
    "BadRequestError",
    "SecretsNotConfiguredError",
    "UnauthorizedError",
    "ForbiddenError",
    "NotFoundError",
    "KeyNotFoundError",
    "NoFreeKeyError",
    "UnknownPoolError",
    "ConflictError",
    "LeaseMismatchError",
    "IdempotencyKeyReusedError",
    "DuplicateSecretError",
    "DuplicateNameError",
    "PoolNotEmptyError",
    "LeaseTokenRequiredError",
    "ServiceUnavailableError",
    "DatabaseUnavailableError",
    "ShuttingDownError",
    "TooManyWaitersError",
    "SecretUnavailableError",
    "InternalServerError",
    "UnknownParameterError",
    "LeaseLost",
    "ERRORS_BY_CODE",
    "error_from_response",
]


class ApiError(Exception):
    """An error answer of the server (RFC 9457 problem details).

    ``code`` is the server's stable error code, e.g. ``"no_free_key"``; it is
    None when the answer had no problem body (answers to HEAD, or a proxy in
    front of the server). ``retry_after`` is the server's Retry-After in
    seconds, None when it sent none.
    """

    def __init__(
        self,
        status: int,
        code: Optional[str] = None,
        title: str = "",
        detail: str = "",
        *,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
        problem: Optional[Mapping[str, Any]] = None,
    ) -> None:
        self.status = status
        self.code = code
        self.title = title or f"HTTP {status}"
        self.detail = detail
        self.request_id = request_id
        self.retry_after = retry_after
        self.problem: Mapping[str, Any] = problem or {}
        message = self.title + (f": {detail}" if detail else "")
        message += f" ({status} {code})" if code else f" ({status})"
        super().__init__(message)

    def __reduce__(self) -> Any:  # picklable across processes
        return (
            _rebuild,
            (type(self), self.status, self.code, self.title, self.detail, self.request_id, self.retry_after),
        )


def _rebuild(
    cls: Type[ApiError],
    status: int,
    code: Optional[str],
    title: str,
    detail: str,
    request_id: Optional[str],
    retry_after: Optional[float],
) -> ApiError:
    return cls(status, code, title, detail, request_id=request_id, retry_after=retry_after)


class BadRequestError(ApiError):
    """The request was refused as malformed (400, 413, 415); nothing changed."""


class UnknownParameterError(BadRequestError):
    """A query parameter the route does not take; the detail names it and
    suggests a close one (400 unknown_parameter)."""


class SecretsNotConfiguredError(BadRequestError):
    """The server has no encryption key, so it takes no secrets; nothing was
    created (400 secrets_not_configured)."""


class UnauthorizedError(ApiError):
    """No valid token was sent (401)."""


class ForbiddenError(ApiError):
    """The token may not do this, e.g. a client token on an admin route (403)."""


class NotFoundError(ApiError):
    """A 404 that says no key or route has this name."""


class KeyNotFoundError(NotFoundError):
    """No live key has this id or name: deleted, or its life ran out
    (404 key_not_found)."""


class NoFreeKeyError(ApiError):
    """Every key (seat) of the pool is held or cooling; one may be free later
    (404 no_free_key)."""


class UnknownPoolError(ApiError):
    """The pool has neither keys nor a policy: no key comes by waiting, check
    its name (404 unknown_pool)."""


class ConflictError(ApiError):
    """A 409 answer."""


class LeaseMismatchError(ConflictError):
    """The lease token is not the key's current lease any more: the key may be
    someone else's now; nothing changed (409 lease_mismatch)."""


class IdempotencyKeyReusedError(ConflictError):
    """A key was claimed under this idempotency key and that lease has ended;
    nothing was claimed (409 idempotency_key_reused)."""


class DuplicateSecretError(ConflictError):
    """A key of the pool already carries a secret of the import, or the import
    lists one twice; nothing was created (409 duplicate_secret)."""


class DuplicateNameError(ConflictError):
    """A key of the pool already has a name of the import, or the import lists
    one twice; nothing was created (409 duplicate_name)."""


class PoolNotEmptyError(ConflictError):
    """The pool still has keys and their deletion was not asked for
    (409 pool_not_empty)."""


class LeaseTokenRequiredError(ApiError):
    """The pool's policy requires the lease token for releases and
    keep-alives, and none was given (428 lease_token_required)."""


class ServiceUnavailableError(ApiError):
    """The server changed nothing and asks to be retried later (503); raised
    once the client's retries are spent."""


class DatabaseUnavailableError(ServiceUnavailableError):
    """The server could not reach its database in time
    (503 database_unavailable)."""


class ShuttingDownError(ServiceUnavailableError):
    """The replica is stopping; another one answers a retry
    (503 shutting_down)."""


class TooManyWaitersError(ServiceUnavailableError):
    """The replica has as many waiting clients, or waited pools, as it takes
    (503 too_many_waiters, too_many_waited_pools)."""


class SecretUnavailableError(ServiceUnavailableError):
    """The server cannot open the key's secret (secret_unavailable)."""


class InternalServerError(ApiError):
    """The server failed; its log has the request id (500 internal_error)."""


#: The error class of each of the server's error codes.
ERRORS_BY_CODE: Dict[str, Type[ApiError]] = {
    "invalid_body": BadRequestError,
    "invalid_parameter": BadRequestError,
    "invalid_idempotency_key": BadRequestError,
    "invalid_report_parameters": BadRequestError,
    "body_too_large": BadRequestError,
    "unsupported_media_type": BadRequestError,
    "unknown_parameter": UnknownParameterError,
    "method_not_allowed": ApiError,
    "internal_error": InternalServerError,
    "secrets_not_configured": SecretsNotConfiguredError,
    "unauthorized": UnauthorizedError,
    "forbidden": ForbiddenError,
    "origin_not_allowed": ForbiddenError,
    "key_not_found": KeyNotFoundError,
    "route_not_found": NotFoundError,
    "no_free_key": NoFreeKeyError,
    "unknown_pool": UnknownPoolError,
    "lease_mismatch": LeaseMismatchError,
    "idempotency_key_reused": IdempotencyKeyReusedError,
    "duplicate_secret": DuplicateSecretError,
    "duplicate_name": DuplicateNameError,
    "pool_not_empty": PoolNotEmptyError,
    "lease_token_required": LeaseTokenRequiredError,
    "database_unavailable": DatabaseUnavailableError,
    "shutting_down": ShuttingDownError,
    "not_ready": ServiceUnavailableError,
    "reports_unavailable": ServiceUnavailableError,
    "too_many_waiters": TooManyWaitersError,
    "too_many_waited_pools": TooManyWaitersError,
    "secret_unavailable": SecretUnavailableError,
}

# For answers without a code (HEAD, a proxy's page) or with a code this
# version does not know.
_ERRORS_BY_STATUS: Dict[int, Type[ApiError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    415: BadRequestError,
    428: LeaseTokenRequiredError,
    500: InternalServerError,
    503: ServiceUnavailableError,
}


def error_from_response(status: int, headers: Mapping[str, str], body: bytes) -> ApiError:
    """The ApiError for an error answer; a body that is not problem details
    still gives the status."""
    problem: Dict[str, Any] = {}
    try:
        parsed = json.loads(body) if body else None
        if isinstance(parsed, dict):
            problem = parsed
    except ValueError:
        pass  # not JSON: a proxy's page
    code = problem.get("code") if isinstance(problem.get("code"), str) else None
    cls = ERRORS_BY_CODE.get(code or "") or _ERRORS_BY_STATUS.get(status)
    if cls is None:
        cls = InternalServerError if status >= 500 else ApiError
    return cls(
        status,
        code,
        str(problem.get("title") or ""),
        str(problem.get("detail") or ""),
        request_id=problem.get("requestId"),
        retry_after=parse_retry_after(headers.get("retry-after")),
        problem=problem,
    )


class LeaseLost(Exception):
    """A lease ended without being released: the server said the key or the
    lease is gone (``__cause__`` is the ApiError), or no keep-alive got
    through before it ran out. From then on the key may be someone else's."""

    def __init__(self, message: str, key_id: str, token: str) -> None:
        super().__init__(message)
        self.key_id = key_id
        self.token = token
