"""Request ids and the access log, as plain ASGI (no per-request task or body buffering)."""

from __future__ import annotations

import logging
import os
import random
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from portico.protocol.errors import PorticoError

log = logging.getLogger("portico.access")

_INTERNAL = orjson.dumps(
    PorticoError("Internal server error; the x-request-id header identifies it in Portico's log.").to_dict()
)


def _valid_id(value: bytes) -> bool:
    return 0 < len(value) <= 128 and all(33 <= b < 127 for b in value)


class RequestIdMiddleware:
    """Honours an incoming ``x-request-id`` (if sane), else makes one; puts it on every response and log line."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # Ids from a generator seeded once from the OS: os.urandom per request releases the GIL (getrandom), and a
        # thread waiting for it (the trace writer, SQLite's) then holds the event loop up for a switch interval.
        self._ids = random.Random(os.urandom(32))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = b""
        for k, v in scope["headers"]:
            if k == b"x-request-id":
                rid = v
                break
        if not _valid_id(rid):
            rid = b"%032x" % self._ids.getrandbits(128)  # uuid4's randomness without building a UUID object
        request_id = rid.decode()
        scope.setdefault("state", {})["request_id"] = request_id
        t0 = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid)]
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                _log(scope, request_id, status, t0)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "path": scope["path"]})
            if status != 0:
                raise  # the response has started; the server closes the connection
            await send_with_id(
                {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]}
            )
            await send_with_id({"type": "http.response.body", "body": _INTERNAL})


def _log(scope: Scope, request_id: str, status: int, t0: float) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    state = scope.get("state", {})
    log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": scope["method"],
            "path": scope["path"],
            "status": status,
            "ms": round((time.perf_counter() - t0) * 1000, 2),
            "key": state.get("key"),
            "model": state.get("model"),
            "deployment": state.get("deployment"),
        },
    )
