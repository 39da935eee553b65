"""The one exception tree, and the only place error spellings of the wire live.

MockServerError                      anything mockserver raises on purpose
├── ConfigError                      bad settings at startup or in an admin patch (names key + layer)
└── APIError                         an Anthropic error response: knows status and error.type
    ├── InvalidRequestError          400 invalid_request_error
    ├── AuthenticationError          401 authentication_error
    ├── BillingError                 402 billing_error
    ├── PermissionDeniedError        403 permission_error
    ├── NotFoundError                404 not_found_error
    ├── MethodNotAllowedError        405 invalid_request_error
    ├── ConflictError                409 conflict_error
    ├── RequestTooLargeError         413 request_too_large
    ├── RateLimitError               429 rate_limit_error
    ├── InternalServerError          500 api_error
    ├── ServiceUnavailableError      503 api_error (store outage)
    ├── GatewayTimeoutError          504 timeout_error
    └── OverloadedError              529 overloaded_error

Any other status (an injected fault's 408, 422, 502...) is an `InternalServerError` (api_error) from
500 up and an `InvalidRequestError` (invalid_request_error) below: the API uses
invalid_request_error for the 4xx statuses that have no type of their own (reference §8.2).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class MockServerError(Exception):
    pass


class ConfigError(MockServerError):
    pass


class StoreUnavailable(MockServerError):
    """The store cannot be reached; callers answer 503 rather than guess at admission."""


class APIError(MockServerError):
    # Each class's own; an instance may say otherwise (an injected 502, a test's own error type).
    status: int = 500
    error_type: str = "api_error"

    def __init__(
        self,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
        status: int | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers or {})
        self.details = dict(details) if details else None
        if status is not None:
            self.status = status
        if error_type is not None:
            self.error_type = error_type

    def body(self, request_id: str | None) -> dict[str, Any]:
        return error_body(self.error_type, self.message, request_id, self.details)


class InvalidRequestError(APIError):
    status = 400
    error_type = "invalid_request_error"


class AuthenticationError(APIError):
    status = 401
    error_type = "authentication_error"


class BillingError(APIError):
    status = 402
    error_type = "billing_error"


class PermissionDeniedError(APIError):
    status = 403
    error_type = "permission_error"


class NotFoundError(APIError):
    status = 404
    error_type = "not_found_error"


class MethodNotAllowedError(APIError):
    status = 405
    error_type = "invalid_request_error"


class ConflictError(APIError):
    status = 409
    error_type = "conflict_error"


class RequestTooLargeError(APIError):
    status = 413
    error_type = "request_too_large"


class RateLimitError(APIError):
    status = 429
    error_type = "rate_limit_error"

    def __init__(self, message: str, *, limit: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.limit = limit  # which limit was exhausted, e.g. "fast mode output tokens per minute"


class InternalServerError(APIError):
    status = 500
    error_type = "api_error"


class ServiceUnavailableError(APIError):
    status = 503
    error_type = "api_error"


class GatewayTimeoutError(APIError):
    status = 504
    error_type = "timeout_error"


class OverloadedError(APIError):
    status = 529
    error_type = "overloaded_error"


ERROR_CLASSES_BY_STATUS: dict[int, type[APIError]] = {
    cls.status: cls
    for cls in (
        InvalidRequestError,
        AuthenticationError,
        BillingError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        RequestTooLargeError,
        RateLimitError,
        InternalServerError,
        ServiceUnavailableError,
        GatewayTimeoutError,
        OverloadedError,
    )
}


def error_body(
    error_type: str, message: str, request_id: str | None, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        error["details"] = dict(details)
    return {"type": "error", "error": error, "request_id": request_id}


def api_error_for_status(status: int, message: str, **kwargs: Any) -> APIError:
    """An APIError for any status, including ones without a class of their own (e.g. 502)."""
    cls = ERROR_CLASSES_BY_STATUS.get(status)
    if cls is not None:
        return cls(message, **kwargs)
    generic = InternalServerError if status >= 500 else InvalidRequestError
    return generic(message, status=status, **kwargs)
