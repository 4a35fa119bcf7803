"""``/admin``: virtual keys and usage reports. Guarded by the master key (see ``server.auth``)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from portico.gateway.keys import KeyRecord
from portico.protocol.errors import InvalidRequest, NotFound
from portico.runtime import Runtime
from portico.server.auth import require_admin
from portico.server.body import read_model
from portico.storage.usage import GROUPS, usage_report


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


class KeyFields(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: list[str] | None = None
    rpm: int | None = Field(default=None, ge=1)
    tpm: int | None = Field(default=None, ge=1)
    budget_usd: float | None = Field(default=None, gt=0)
    budget_period: Literal["day", "month", "total"] | None = None
    # Tool names or globs (send_*) the key may call; absent: read-only tools only, never a write tool.
    tools: list[str] | None = None


class KeyCreate(KeyFields):
    name: str = Field(min_length=1, max_length=200)


def _no_default(schema: dict) -> None:
    schema.pop("default", None)


class KeyUpdate(KeyFields):
    # A key always has a name: absent leaves it as is, null is a 400 (not the database's NOT NULL error).
    name: str = Field(default=None, min_length=1, max_length=200, json_schema_extra=_no_default)  # type: ignore[assignment]


def _check_models(rt: Runtime, models: list[str] | None) -> None:
    known = {n for n, _ in rt.model_names()}
    for i, m in enumerate(models or []):
        if m not in known:
            raise InvalidRequest(f"models[{i}]: unknown model or application '{m}'", param=f"models[{i}]")


async def create_key(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    body = await read_model(request, KeyCreate, 64 * 1024)
    _check_models(rt, body.models)
    rec, token = await rt.keys.create(
        body.name, models=body.models, rpm=body.rpm, tpm=body.tpm, budget_usd=body.budget_usd,
        budget_period=body.budget_period or ("total" if body.budget_usd is not None else None), tools=body.tools,
    )  # fmt: skip
    return _json({**rec.public(), "key": token}, 201)


def _found(request: Request, rec: KeyRecord | None) -> dict:
    if rec is None:
        raise NotFound(f"No key with id '{request.path_params['key_id']}'", code="key_not_found")
    return rec.public()


async def list_keys(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    return _json({"object": "list", "data": [r.public() for r in rt.keys.all()]})


async def get_key(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    return _json(_found(request, await rt.keys.get(request.path_params["key_id"])))


async def update_key(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    body = await read_model(request, KeyUpdate, 64 * 1024)
    _check_models(rt, body.models)
    values = body.model_dump(exclude_unset=True)
    if not values:
        raise InvalidRequest("Nothing to update: send at least one field", code="empty_update")
    return _json(_found(request, await rt.keys.update(request.path_params["key_id"], values)))


async def revoke_key(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    return _json(_found(request, await rt.keys.revoke(request.path_params["key_id"])))


def parse_when(value: str | None, param: str) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InvalidRequest(f"{param} must be an ISO 8601 time or epoch seconds", param=param) from None


async def get_usage(request: Request) -> Response:
    require_admin(request)
    rt: Runtime = request.app.state.runtime
    q = request.query_params
    group_by = [g for g in (q.get("group_by") or "").split(",") if g]
    for g in group_by:
        if g not in GROUPS:
            raise InvalidRequest(f"group_by: unknown field '{g}' (use {', '.join(GROUPS)})", param="group_by")
    since = parse_when(q.get("since"), "since")
    until = parse_when(q.get("until"), "until")
    await rt.usage.flush()  # a report includes every request answered so far
    rows = await usage_report(rt.db, group_by, since, until, key_id=q.get("key_id"))
    return _json(
        {
            "object": "list",
            "group_by": group_by,
            "since": since,
            "until": until,
            "generated_at": time.time(),
            "data": rows,
        }
    )
