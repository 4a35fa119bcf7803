"""Errors in OpenAI's wire shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure that reaches a client is a :class:`PorticoError`, so the server has exactly one place that
turns failures into responses and the status code always matches the type.
"""

from __future__ import annotations

from typing import Any


class PorticoError(Exception):
    """A failure with the HTTP status and OpenAI error fields a client should see."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(PorticoError):
    status = 400
    type = "invalid_request_error"


class AuthenticationError(PorticoError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDenied(PorticoError):
    status = 403
    type = "permission_error"


class NotFound(PorticoError):
    status = 404
    type = "invalid_request_error"


class ModelNotFound(NotFound):
    code = "model_not_found"


class Conflict(PorticoError):
    """The resource is not in a state that allows this (an approval already decided or expired)."""

    status = 409
    type = "invalid_request_error"


class RateLimited(PorticoError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamError(PorticoError):
    """The provider failed. ``status`` is 502 (bad answer), 503 (unreachable/overloaded) or 504 (timeout)."""

    status = 502
    type = "upstream_error"
    code = "upstream_error"

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        upstream_status: int | None = None,
        retryable: bool = True,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, status=status, code=code, headers=headers)
        self.upstream_status = upstream_status
        self.retryable = retryable


class ServiceUnavailable(PorticoError):
    status = 503
    type = "service_unavailable"
    code = "not_ready"
