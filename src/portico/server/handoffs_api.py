"""``/admin/handoffs``: the queue of conversations handed to a human (master key only).

- ``GET /admin/handoffs?status=open&application=&limit=50``: newest first.
- ``POST /admin/handoffs``: open one by hand (``application``, ``conversation_id``, ``reason``, ``messages``).
- ``GET /admin/handoffs/{id}``: one, with its conversation.
- ``POST /admin/handoffs/{id}``: ``status`` (open | claimed | resolved), ``assignee``, ``note`` (appended).
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from portico.guardrails.handoffs import STATUSES, HandoffStore
from portico.protocol.errors import InvalidRequest, NotFound
from portico.runtime import Runtime
from portico.server.auth import require_admin
from portico.server.body import read_model


class HandoffCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    application: str | None = None
    conversation_id: str | None = None
    reason: str = Field(default="manual", min_length=1, max_length=200)
    messages: list[dict[str, Any]] = Field(default_factory=list)


class HandoffUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["open", "claimed", "resolved"] | None = None
    assignee: str | None = Field(default=None, max_length=200)
    note: str | None = None


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _store(request: Request) -> HandoffStore:
    rt: Runtime = request.app.state.runtime
    return HandoffStore(rt.db)


async def list_handoffs(request: Request) -> Response:
    require_admin(request)
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}", param="status")
    try:
        limit = min(max(int(request.query_params.get("limit", "50")), 1), 500)
    except ValueError:
        raise InvalidRequest("limit must be an integer", param="limit") from None
    rows = await _store(request).list(status, request.query_params.get("application"), limit)
    return _json({"object": "list", "data": rows})


async def create_handoff(request: Request) -> Response:
    require_admin(request)
    body = await read_model(request, HandoffCreate, 1 << 20)
    row = await _store(request).create(None, body.reason, body.messages, body.application, body.conversation_id)
    return _json(row, 201)


async def get_handoff(request: Request) -> Response:
    require_admin(request)
    row = await _store(request).get(request.path_params["handoff_id"])
    if row is None:
        raise NotFound(f"No handoff with id '{request.path_params['handoff_id']}'", code="handoff_not_found")
    return _json(row)


async def update_handoff(request: Request) -> Response:
    require_admin(request)
    body = await read_model(request, HandoffUpdate, 1 << 20)
    store = _store(request)
    row = await store.get(request.path_params["handoff_id"])
    if row is None:
        raise NotFound(f"No handoff with id '{request.path_params['handoff_id']}'", code="handoff_not_found")
    fields: dict[str, Any] = {}
    if body.status is not None:
        fields["status"] = body.status
    if body.assignee is not None:
        fields["assignee"] = body.assignee
    if body.note is not None:
        fields["notes"] = [*(row.get("notes") or []), {"ts": time.time(), "text": body.note}]
    return _json(await store.update(row["id"], **fields) if fields else row)
