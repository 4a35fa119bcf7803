"""Reading and validating JSON request bodies."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from portico.protocol.errors import InvalidRequest
from portico.server.errors import from_validation

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with a 413 as soon as it is known to pass ``limit`` bytes (declared or streamed): never
    more than ``limit`` bytes in memory."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InvalidRequest(f"Request body is larger than {limit} bytes", status=413, code="request_too_large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidRequest(f"Request body is larger than {limit} bytes", status=413, code="request_too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_model(request: Request, model: type[M], limit: int) -> M:
    return parse_model(await read_body(request, limit), model)


# orjson parses 1024 levels but serialises only 255 (and Python-level walkers stop near 1000): a body deeper than
# this would be accepted, then fail as a 500 wherever it is re-encoded (upstream call, trace, store).
MAX_DEPTH = 100


def loads(body: bytes) -> Any:
    """JSON from a request body, or a 400 in the error shape: not JSON, not UTF-8, or nested too deep."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidRequest(f"Request body is not valid JSON: {e}", code="invalid_json") from None
    if _deeper_than(data, MAX_DEPTH):
        raise InvalidRequest(f"Request body is nested more than {MAX_DEPTH} levels deep", code="invalid_json")
    return data


def _deeper_than(data: Any, limit: int) -> bool:
    stack = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        if depth > limit:
            return True
        stack.extend((v, depth + 1) for v in node if isinstance(v, dict | list))
    return False


def parse_model(body: bytes, model: type[M]) -> M:
    if not body:
        raise InvalidRequest("Request body is empty; send a JSON object", code="invalid_json")
    data = loads(body)
    if not isinstance(data, dict):
        raise InvalidRequest("Request body must be a JSON object", code="invalid_json")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise from_validation(e) from None
