"""``/admin/requests``: browse stored request traces. Guarded by the master key like the rest of ``/admin``."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from portico.protocol.errors import InvalidRequest, NotFound
from portico.runtime import Runtime
from portico.server.admin import parse_when
from portico.server.auth import require_admin
from portico.storage.traces import get_trace, list_traces

MAX_LIMIT = 500


def _json(data: object) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")


def _int(value: str | None, param: str, default: int | None = None) -> int | None:
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise InvalidRequest(f"{param} must be an integer", param=param) from None


def _filters(q: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for param, column in (("key", "key_name"), ("model", "model"), ("application", "application")):
        if q.get(param):
            out[column] = q[param]
    status = _int(q.get("status"), "status")
    if status is not None:
        out["status"] = status
    return out


async def list_requests(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    q = request.query_params
    limit = _int(q.get("limit"), "limit", 50) or 50
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}", param="limit")
    await rt.tracing.flush()  # the list includes every request settled so far
    rows = await list_traces(
        rt.db,
        filters=_filters(q),
        since=parse_when(q.get("since"), "since"),
        until=parse_when(q.get("until"), "until"),
        before=parse_when(q.get("before"), "before"),
        text=q.get("q") or None,
        limit=limit,
    )
    return _json({"object": "list", "data": rows})


async def get_request(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    request_id = request.path_params["request_id"]
    await rt.tracing.flush()
    trace = await get_trace(rt.db, request_id)
    if trace is None:
        raise NotFound(f"No stored trace for request '{request_id}'", code="request_not_found")
    trace.update(await rt.feedback.about(request_id))  # feedback, session and user (evaluation/)
    return _json({"object": "request.trace", **trace})
