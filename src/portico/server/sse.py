"""Server-sent events for chat streams, with client-disconnect → upstream cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

import orjson
from starlette.types import Receive, Scope, Send

from portico.protocol.chat import COMMENT_OBJECT, completion_chunks
from portico.protocol.errors import PorticoError

log = logging.getLogger("portico.server")

DONE = b"data: [DONE]\n\n"


async def encode_events(chunks: AsyncIterator[dict[str, Any]], include_usage: bool) -> AsyncIterator[bytes]:
    try:
        async for chunk in chunks:
            if chunk.get("object") == COMMENT_OBJECT:
                yield b": " + chunk["comment"].encode() + b"\n\n"
                continue
            if not include_usage:
                if not chunk.get("choices") and chunk.get("usage"):
                    continue  # the usage chunk Portico asked the upstream for, not the client
                chunk.pop("usage", None)
            yield b"data: " + orjson.dumps(chunk) + b"\n\n"
    except PorticoError as e:
        # Headers are gone already: report in-band the way OpenAI does, then end the stream.
        log.warning("stream failed after first byte", extra={"error": e.message, "status": e.status})
        yield b"data: " + orjson.dumps(e.to_dict()) + b"\n\n"
        return
    yield DONE


class Translator(Protocol):
    """Chat chunks → another wire format's events (the Responses API's, Anthropic's)."""

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]: ...
    def finish(self) -> list[dict[str, Any]]: ...
    def failed(self, e: PorticoError) -> list[dict[str, Any]]: ...


async def translated(tr: Translator, chunks: AsyncIterator[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    """The events of ``chunks`` through ``tr``: its ``finish`` events when the stream ends, or its ``failed``
    events when it breaks after the first byte (headers are gone, so the failure is reported in-band)."""
    async with contextlib.aclosing(chunks):  # type: ignore[type-var]
        try:
            async for chunk in chunks:
                if chunk.get("object") == COMMENT_OBJECT:  # keep-alive of a long step: passed on as is
                    on_tool = getattr(tr, "tool_event", None)
                    if on_tool is not None and chunk.get("tool_event") is not None:  # a server tool's call
                        for event in on_tool(chunk["tool_event"]):
                            yield event
                        continue
                    on_start = getattr(tr, "tool_started", None)
                    if on_start is not None and chunk.get("tool_start") is not None:  # ... as it starts
                        for event in on_start(chunk["tool_start"]):
                            yield event
                        continue
                    yield chunk
                    continue
                for event in tr.feed(chunk):
                    yield event
        except PorticoError as e:
            for event in tr.failed(e):
                yield event
            return
    for event in tr.finish():
        yield event


async def encode_named(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[bytes]:
    """Events whose ``type`` is also the SSE event name (the Responses and Anthropic Messages streams). Their
    translators report failures as events of their own, so nothing is added at the end."""
    async for event in events:
        if event.get("object") == COMMENT_OBJECT:
            yield b": " + event["comment"].encode() + b"\n\n"
            continue
        yield b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


async def completion_as_chunks(resp: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """A finished completion (e.g. a cache hit or a stock answer) replayed as a stream."""
    for chunk in completion_chunks(resp):
        yield chunk


class SSEResponse:
    """Streams ``body`` and watches the client: when it disconnects, the stream task is cancelled at once,
    which closes the upstream call (Starlette's own StreamingResponse notices only at the next write)."""

    def __init__(self, body: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        self.body = body
        self.headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),
        ]
        self.headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        stream = asyncio.ensure_future(self._stream(send))
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait({stream, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (stream, watch):
                if not t.done():
                    t.cancel()
            await asyncio.gather(stream, watch, return_exceptions=True)
            aclose = getattr(self.body, "aclose", None)
            if aclose is not None:
                await aclose()
        if stream.done() and not stream.cancelled() and stream.exception() is not None:
            exc = stream.exception()
            if not isinstance(exc, OSError):  # OSError: the socket went away mid-write
                raise exc

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        async for data in self.body:
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
