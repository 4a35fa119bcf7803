"""A scripted OpenAI-compatible upstream for agent tests and benchmarks: ``/v1/chat/completions`` answers each
conversation from a script — tool calls, then an answer — streaming or not, and records every request.

Which turn of the script answers is the number of assistant messages after the conversation's last user
message, so concurrent conversations each follow their own script. A script is a list of ``Turn`` or a function
``(request body) -> Turn``.

    up = ScriptedUpstream([Turn.call("lookup", order_id="A1"), Turn.say("Order A1 shipped.")])
    async with up:                     # in this event loop (unit tests)
        ...  f"{up.url}/v1"
    with up.in_thread():               # in a thread of its own (a real `portico serve` calls it)
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from tests.support import free_port


@dataclass
class Turn:
    content: str | None = None
    tool_calls: list[tuple[str, Any]] = field(default_factory=list)  # (name, arguments: dict or raw string)
    prompt_tokens: int = 100
    completion_tokens: int = 20
    delay: float = 0.0  # seconds before answering
    chunk_delay: float = 0.0  # seconds between streamed pieces
    reasoning: str | None = None  # sent as reasoning_content (vLLM, llama.cpp and DeepSeek servers do)

    @classmethod
    def say(cls, text: str, **kw: Any) -> Turn:
        return cls(content=text, **kw)

    @classmethod
    def call(cls, name: str, arguments: Any = None, /, **kw_args: Any) -> Turn:
        return cls(tool_calls=[(name, arguments if arguments is not None else kw_args)])

    @classmethod
    def calls(cls, *calls: tuple[str, Any], content: str | None = None, **kw: Any) -> Turn:
        return cls(content=content, tool_calls=list(calls), **kw)


Script = list[Turn] | Callable[[dict[str, Any]], Turn]


def turn_index(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
    return sum(1 for m in messages[last_user + 1 :] if m.get("role") == "assistant")


@dataclass
class Seen:
    body: dict[str, Any]
    at: float  # time.time() when it arrived


class ScriptedUpstream:
    def __init__(self, script: Script, model: str = "scripted-1", routes: list[web.RouteDef] | None = None) -> None:
        self.script = script
        self.routes = routes or []  # more endpoints on the same server (e.g. the tools an agent calls)
        self.model = model
        self.requests: list[Seen] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._runner: web.AppRunner | None = None

    def turn_for(self, body: dict[str, Any]) -> Turn:
        if callable(self.script):
            return self.script(body)
        i = turn_index(body)
        return self.script[min(i, len(self.script) - 1)]

    # ---- HTTP -------------------------------------------------------------------------------------------

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Seen(body, time.time()))
        turn = self.turn_for(body)
        if turn.delay:
            await asyncio.sleep(turn.delay)
        calls = [_tool_call(name, args) for name, args in turn.tool_calls]
        usage = {"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens,
                 "total_tokens": turn.prompt_tokens + turn.completion_tokens}  # fmt: skip
        finish = "tool_calls" if calls else "stop"
        cid = "chatcmpl-" + uuid.uuid4().hex[:12]
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": turn.content}
            if turn.reasoning:
                message["reasoning_content"] = turn.reasoning
            if calls:
                message["tool_calls"] = calls
            return web.json_response({"id": cid, "object": "chat.completion", "created": int(time.time()),
                                      "model": self.model, "usage": usage,
                                      "choices": [{"index": 0, "message": message, "finish_reason": finish}]},
                                     dumps=lambda o: orjson.dumps(o).decode())  # fmt: skip
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        async def send(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> None:
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
                **extra,
            }
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
            if turn.chunk_delay:
                await asyncio.sleep(turn.chunk_delay)

        await send({"role": "assistant", "content": ""})
        for word in _pieces(turn.reasoning or ""):
            await send({"reasoning_content": word})
        for word in _pieces(turn.content or ""):
            await send({"content": word})
        for i, c in enumerate(calls):
            args = c["function"]["arguments"]
            half = len(args) // 2
            await send(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": c["id"],
                            "type": "function",
                            "function": {"name": c["function"]["name"], "arguments": args[:half]},
                        }
                    ]
                }
            )
            await send({"tool_calls": [{"index": i, "function": {"arguments": args[half:]}}]})
        await send({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            chunk = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": self.model,
                "choices": [],
                "usage": usage,
            }
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/health", _health)
        app.add_routes(self.routes)
        return app

    async def __aenter__(self) -> ScriptedUpstream:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @contextlib.contextmanager
    def in_thread(self) -> Iterator[ScriptedUpstream]:
        """Serve from a thread with its own event loop (for a server process or a sync client to call)."""
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(self.__aenter__())
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.__aexit__())
            loop.close()

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        started.wait(10)
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(loop.stop)
            t.join(10)


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


def _tool_call(name: str, args: Any) -> dict[str, Any]:
    raw = args if isinstance(args, str) else orjson.dumps(args).decode()
    return {"id": "call_" + uuid.uuid4().hex[:12], "type": "function", "function": {"name": name, "arguments": raw}}


def _pieces(text: str) -> list[str]:
    """Word-sized pieces that join back to the text."""
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch == " ":
            out.append(cur)
            cur = ""
    if cur:
        out.append(cur)
    return out
