"""The route-spec registry: each route declares its models once (``Op``) and the OpenAPI 3.1 document is built
from those declarations and the pydantic models' own JSON Schemas (OpenAPI 3.1 *is* JSON Schema 2020-12, so
pydantic's output goes in unchanged; its ``$defs`` become ``components/schemas``).

Adding a route's documentation is one ``Op(...)`` line in ``catalog.py``; a test fails when a served route has
none, so the document cannot fall behind the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from portico.protocol.schemas import ErrorResponse

Auth = Literal["key", "admin", "none"]

REF = "#/components/schemas/{model}"
_PATH_PARAM = re.compile(r"{(\w+)}")

_STATUS_TEXT = {
    202: "Accepted: nothing to answer (e.g. a JSON-RPC notification); empty body",
    400: "Invalid request (the message and `param` name the field)",
    401: "Missing or unknown API key",
    403: "The key may not use this (model not allowed, admin-only route)",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable (see the Accept header the route needs)",
    409: "Conflict: already exists, or no longer in a state that allows this",
    413: "Request body too large",
    429: "Rate limit or budget exceeded (see Retry-After)",
    502: "The upstream failed or answered badly",
    503: "Upstream unreachable, or the model is not ready yet",
    504: "The upstream timed out",
}


@dataclass(frozen=True, slots=True)
class Example:
    """A request that works against a server running the test config. ``capture`` names path parameters that
    later examples take from this response's fields (``{"key_id": "id"}``), so a walk can chain create → get."""

    body: dict[str, Any] | None = None
    path: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    status: int = 200
    capture: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Op:
    method: str
    path: str  # OpenAPI template: /v1/models/{model}
    summary: str
    response: type[BaseModel] | None  # None: a non-JSON body (see media_type)
    request: type[BaseModel] | None = None
    query: type[BaseModel] | None = None  # its fields become query parameters
    status: int = 200
    errors: tuple[int, ...] = ()
    auth: Auth = "key"
    tag: str = "default"
    media_type: str = "application/json"
    stream: type[BaseModel] | None = None  # text/event-stream of these when the body asks ``stream: true``
    example: Example | None = None
    # Error statuses whose body is not OpenAI's error shape (e.g. JSON-RPC errors from /mcp).
    error_models: dict[int, type[BaseModel]] = field(default_factory=dict)
    error_model: type[BaseModel] = ErrorResponse  # every other error status (e.g. Anthropic's shape)
    stream_done: bool = True  # ends with ``data: [DONE]`` (chat), or named events that just stop (Responses, Messages)
    empty: tuple[int, ...] = ()  # more success statuses, answered with no body

    @property
    def operation_id(self) -> str:
        words = re.sub(r"[{}]", "", self.path).strip("/").replace("/", "_").replace("-", "_")
        return f"{self.method.lower()}_{words}"

    def error_statuses(self) -> list[int]:
        extra = {"key": (401, 403), "admin": (401, 403), "none": ()}[self.auth]
        body = (400, 413) if self.request is not None else ()
        return sorted({*self.errors, *extra, *body} - {self.status})


def _collect_models(ops: Iterable[Op]) -> list[type[BaseModel]]:
    seen: dict[type[BaseModel], None] = {ErrorResponse: None}
    for op in ops:
        for m in (op.request, op.response, op.stream, op.error_model, *op.error_models.values()):
            if m is not None:
                seen.setdefault(m, None)
    return list(seen)


def _schemas(models: list[type[BaseModel]]) -> dict[str, Any]:
    """Every model's JSON Schema under ``components/schemas``, refs rewritten to point there.

    Requests are rendered in validation mode (what a client may send), the rest in serialization mode."""
    pairs = [(m, "validation") for m in models]
    top, defs = models_json_schema(pairs, ref_template=REF)  # type: ignore[arg-type]
    out = dict(defs.get("$defs", {}))
    for (m, _mode), schema in top.items():
        if "$ref" not in schema:  # pydantic puts each model in $defs and returns a $ref to it
            out[m.__name__] = schema
    return _any_of(out)


def _any_of(node: Any) -> Any:
    """pydantic writes a union chosen by a callable discriminator as ``oneOf``, but its branches may overlap
    (a text part also matches the catch-all part): ``anyOf`` is what the validator actually accepts."""
    if isinstance(node, dict):
        out = {k: _any_of(v) for k, v in node.items()}
        if "oneOf" in out and "discriminator" not in out:
            out["anyOf"] = out.pop("oneOf")
        return out
    if isinstance(node, list):
        return [_any_of(v) for v in node]
    return node


def _query_schema(prop: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or a value, never null: drop pydantic's ``| None`` branch and the title."""
    branches = [b for b in prop.get("anyOf", []) if b.get("type") != "null"]
    base = branches[0] if len(branches) == 1 else {k: v for k, v in prop.items() if k != "anyOf"}
    extra = {k: v for k, v in prop.items() if k not in ("anyOf", "title", "description") and v is not None}
    return {**{k: v for k, v in base.items() if k != "title"}, **extra}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _parameters(op: Op) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for name in _PATH_PARAM.findall(op.path):
        p: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        if op.example and name in op.example.path:
            p["example"] = op.example.path[name]
        params.append(p)
    if op.query is not None:
        schema = op.query.model_json_schema()  # flat models of scalars: no refs
        required = set(schema.get("required", []))
        for name, prop in schema.get("properties", {}).items():
            q: dict[str, Any] = {"name": name, "in": "query", "required": name in required,
                                 "schema": _query_schema(prop)}  # fmt: skip
            if "description" in prop:
                q["description"] = prop["description"]
            params.append(q)
    return params


def _event_schema(op: Op, description: str) -> dict[str, Any]:
    """One server-sent event, read the way OpenAPI 3.2's ``itemSchema`` reads (and tools read a 3.1 stream's
    ``schema``): ``data`` is JSON of the stream's event type. Chat streams end with ``[DONE]`` and report a failure
    after the first byte in-band, in the error shape (``sse.encode_events``)."""
    assert op.stream is not None
    payload: dict[str, Any] = _ref(op.stream)
    data: dict[str, Any] = {"type": "string", "contentMediaType": "application/json"}
    if op.stream_done:
        data = {"type": "string", "if": {"const": "[DONE]"},
                "else": {**data, "contentSchema": {"anyOf": [payload, _ref(ErrorResponse)]}}}  # fmt: skip
    else:
        data["contentSchema"] = payload
    props = {"event": {"type": "string"}, "data": data, "id": {"type": "string"}, "retry": {"type": "integer"}}
    return {"type": "object", "description": description, "required": ["data"], "properties": props}


def _responses(op: Op) -> dict[str, Any]:
    ok: dict[str, Any] = {"description": {200: "OK", 201: "Created"}.get(op.status) or _STATUS_TEXT[op.status]}
    if op.response is not None:
        content: dict[str, Any] = {op.media_type: {"schema": _ref(op.response)}}
        if op.stream is not None:
            # OpenAPI 3.1 has no schema for SSE events (3.2's itemSchema): the event schema rides in an extension.
            name = op.stream.__name__
            events = (
                f"`data: <{name}>` events, then `data: [DONE]`"
                if op.stream_done
                else f"`event: <type>` + `data: <{name}>` events; the stream closes after the last"
            )
            content["text/event-stream"] = {
                "schema": _event_schema(op, events),
                "x-portico-event-schema": _ref(op.stream),
            }
        ok["content"] = content
    else:
        kind = "object" if op.media_type == "application/json" else "string"
        ok["content"] = {op.media_type: {"schema": {"type": kind}}}
    out = {str(op.status): ok}
    for status in op.empty:
        out[str(status)] = {"description": _STATUS_TEXT[status]}
    for status in op.error_statuses():
        err = {"application/json": {"schema": _ref(op.error_models.get(status, op.error_model))}}
        out[str(status)] = {"description": _STATUS_TEXT.get(status, "Error"), "content": err}
    return out


_SECURITY = {
    "key": [{"bearer": []}, {"x-api-key": []}],
    "admin": [{"bearer": []}],
    "none": [],
}


def _operation(op: Op) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "tags": [op.tag],
        "security": _SECURITY[op.auth],
        "responses": _responses(op),
    }
    params = _parameters(op)
    if params:
        out["parameters"] = params
    if op.request is not None:
        media: dict[str, Any] = {"schema": _ref(op.request)}
        if op.example and op.example.body is not None:
            media["example"] = op.example.body
        out["requestBody"] = {"required": True, "content": {"application/json": media}}
    if op.auth == "admin":
        out["description"] = "Needs the master key when one is configured."
    return out


def build_spec(ops: Iterable[Op], *, title: str, version: str, description: str = "") -> dict[str, Any]:
    ops = list(ops)
    seen: set[tuple[str, str]] = set()
    for op in ops:
        if (op.method, op.path) in seen:
            raise ValueError(f"{op.method} {op.path} is declared twice")
        seen.add((op.method, op.path))
    components = _schemas(_collect_models(ops))
    paths: dict[str, dict[str, Any]] = {}
    for op in ops:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a virtual key, or the master key"},
                "x-api-key": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "tags": sorted(({"name": t} for t in {op.tag for op in ops}), key=lambda t: t["name"]),
    }
