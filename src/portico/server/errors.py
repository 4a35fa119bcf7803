"""Every failure leaves the server in OpenAI's error shape with a matching status code."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from portico.protocol.errors import InvalidRequest, NotFound, PorticoError

log = logging.getLogger("portico.server")


def error_response(e: PorticoError) -> Response:
    return Response(orjson.dumps(e.to_dict()), status_code=e.status, media_type="application/json", headers=e.headers)


def _loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for p in loc:
        if isinstance(p, int):
            out += f"[{p}]"
        elif isinstance(p, str) and p not in ("function-after", "function-before") and not p.startswith("tagged-union"):
            out += f".{p}" if out else p
    return out


def from_validation(e: ValidationError) -> InvalidRequest:
    errs = e.errors(include_url=False)
    # Union branches repeat one problem per branch; report each location once.
    seen: dict[str, str] = {}
    for err in errs:
        where = _loc(
            tuple(
                p
                for p in err["loc"]
                if not (
                    (isinstance(p, str) and p in ("str", "list", "dict", "int"))
                    or (isinstance(p, str) and p.startswith("list["))
                )
            )
        )
        seen.setdefault(where, err["msg"].removeprefix("Value error, "))
    parts = [f"{w}: {m}" if w else m for w, m in list(seen.items())[:5]]
    first = next(iter(seen), None)
    return InvalidRequest("Invalid request: " + "; ".join(parts), param=first or None, code="invalid_value")


async def portico_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PorticoError)
    if exc.status >= 500:
        log.warning("request failed", extra={"status": exc.status, "error": exc.message})
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        e: PorticoError = NotFound(f"Unknown path: {request.method} {request.url.path}", code="unknown_url")
    elif exc.status_code == 405:
        e = InvalidRequest(
            f"Method {request.method} is not allowed on {request.url.path}",
            code="method_not_allowed",
            status=405,
            headers=dict(exc.headers or {}),  # keeps Allow (RFC 9110)
        )
    else:
        e = PorticoError(str(exc.detail), status=exc.status_code)
        e.type = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return error_response(e)
