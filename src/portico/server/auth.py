"""Credentials from requests, and the guard of the admin API."""

from __future__ import annotations

from starlette.requests import Request

from portico.gateway.control import Caller
from portico.protocol.errors import AuthenticationError, PermissionDenied
from portico.runtime import Runtime


def token_from(request: Request) -> str | None:
    """``Authorization: Bearer …``, ``api-key`` (Azure style) or ``x-api-key`` (Anthropic style)."""
    h = request.headers
    auth = h.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return h.get("api-key") or h.get("x-api-key") or None


async def caller_of(request: Request) -> Caller:
    rt: Runtime = request.app.state.runtime
    caller = await rt.control.authenticate(token_from(request))
    request.scope["state"]["key"] = caller.name
    return caller


def require_admin(request: Request) -> None:
    """The master key, when one is configured; without one the server only runs on loopback (checked at start)."""
    rt: Runtime = request.app.state.runtime
    if not rt.control.auth_enabled:
        return
    token = token_from(request)
    if not rt.control.is_master(token):
        if token is None:
            raise AuthenticationError("The admin API needs the master key.", code="missing_api_key")
        raise PermissionDenied("The admin API needs the master key.", code="admin_only")
