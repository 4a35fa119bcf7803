"""``/admin/approvals``: the queue of write actions waiting for a human, and the decisions (master key)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portico.actions.approvals import STATUSES, public
from portico.protocol.errors import InvalidRequest
from portico.runtime import Runtime
from portico.server.auth import require_admin
from portico.server.body import parse_model, read_body

_MAX_BODY = 256 * 1024


class Approve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    arguments: dict[str, Any] | None = None  # edited arguments, checked against the tool's schema again
    by: str | None = Field(default=None, max_length=200)  # who decides, for the audit (default: operator)


class Deny(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str | None = Field(default=None, max_length=4000)
    by: str | None = Field(default=None, max_length=200)


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _body(request: Request, model: type[BaseModel]) -> Any:
    raw = await read_body(request, _MAX_BODY)
    return parse_model(raw, model) if raw.strip() else model()


async def list_approvals(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status: unknown status '{status}' (use {', '.join(STATUSES)})", param="status")
    try:
        limit = min(max(int(request.query_params.get("limit", "100")), 1), 1000)
    except ValueError:
        raise InvalidRequest("limit must be an integer", param="limit") from None
    rows = await rt.approvals.list(status, limit)
    return _json({"object": "list", "data": [public(r) for r in rows]})


async def get_approval(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    row = await rt.approvals.get(request.path_params["approval_id"])
    audit = await rt.approvals.store.audit_log(row["id"])
    return _json({**public(row), "audit": audit})


async def approve(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    body: Approve = await _body(request, Approve)
    row = await rt.approvals.approve(request.path_params["approval_id"], body.by or "operator", body.arguments)
    return _json(public(row))


async def deny(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    body: Deny = await _body(request, Deny)
    row = await rt.approvals.deny(request.path_params["approval_id"], body.by or "operator", body.reason)
    return _json(public(row))


def routes() -> list[Route]:
    base = "/admin/approvals"
    return [
        Route(base, list_approvals, methods=["GET"]),
        Route(base + "/{approval_id}", get_approval, methods=["GET"]),
        Route(base + "/{approval_id}/approve", approve, methods=["POST"]),
        Route(base + "/{approval_id}/deny", deny, methods=["POST"]),
    ]
