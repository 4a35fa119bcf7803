"""One agent run: model turns through the gateway, the server tools they ask for in between, the run's limits,
its usage and cost, and a span for every model and tool call.

Every model call goes through ``gateway.chat``/``chat_stream`` (retries, fallbacks, breakers apply) and is
charged to the request as it happens (``PriceBook.charge``), so the usage and cost of the response, the usage
record and the key's budget cover the whole run, even one the client leaves mid-stream. Streaming: every turn
streams; text is passed on as it arrives, a turn that turns into tool calls is accumulated, and while tools
run the connection gets SSE comment lines (which clients ignore).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from portico.actions.execute import CallOutcome, run_tool
from portico.actions.tool import Tool, ToolContext, ToolResult
from portico.gateway.costing import ANSWER_CHARGED
from portico.pipeline.context import CHILD_SPANS, ChildSpan, RequestContext
from portico.protocol.assemble import assemble
from portico.protocol.chat import (
    ChatCompletionRequest,
    Message,
    ToolCall,
    choice_dict,
    chunk_dict,
    comment_chunk,
    completion_dict,
    delta_choice,
    new_completion_id,
    new_tool_call_id,
)
from portico.protocol.chat import Tool as FunctionTool
from portico.protocol.errors import UpstreamError

LIMITS = {
    "max_steps": "its limit of {max_steps} model calls (max_steps)",
    "max_tool_calls": "its limit of {max_tool_calls} tool calls (max_tool_calls)",
    "time_limit": "its time limit of {time_limit:g} seconds (time_limit)",
    "budget_usd": "its budget of {budget_usd:g} USD (budget_usd)",
    "budget_tokens": "its budget of {budget_tokens} tokens (budget_tokens)",
}
# Statuses where the text the model reads comes from outside (a tool, its upstream): screened for injections.
_SCREENED = frozenset({"ok", "error"})


def limit_message(reason: str, options: Any, tool: str | None = None) -> str:
    if reason == "injection":
        return (f"I stopped before finishing: the result of the tool '{tool}' contained text that looks like "
                "instructions to the model (a prompt injection), so it was not used.")  # fmt: skip
    return f"I stopped before finishing: the agent reached {LIMITS[reason].format(**options.model_dump())}."


class AgentRun:
    def __init__(self, step: Any, ctx: RequestContext, model: str) -> None:
        self.step = step
        self.o = o = step.options
        self.ctx = ctx
        self.model = model
        req = ctx.request
        self.server: dict[str, Tool] = {t.name: t for t in step.toolbox.expand(o.tools)}
        client = [t for t in req.tools or () if t.function.name not in self.server]
        self.client_names = {t.function.name for t in client}
        self.offered = [FunctionTool.model_validate(t.spec()) for t in self.server.values()] + client
        self.messages: list[Message] = list(req.messages)
        self.deadline = time.monotonic() + o.time_limit
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.spent = 0.0
        self.steps = 0
        self.calls: list[dict[str, Any]] = []  # one summary per tool call
        self.citations: list[dict[str, Any]] = []
        self.flagged: list[str] = []
        self.stopped: str | None = None
        self.stopped_by: str | None = None  # the tool whose output stopped the run
        self.spans: list[ChildSpan] = ctx.state.setdefault(CHILD_SPANS, [])
        # Streams only: one id for every chunk of the run, and the first turn opened before the stream starts.
        self.id = new_completion_id()
        self.created = int(time.time())
        self.shown_model = model
        self._first: RequestContext | None = None
        self._first_reason: str | None = None

    # ---- limits, requests, accounting --------------------------------------------------------------------

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def limit(self) -> str | None:
        o = self.o
        if self.steps >= o.max_steps:
            return "max_steps"
        if time.monotonic() >= self.deadline:
            return "time_limit"
        if o.budget_usd is not None and self.spent >= o.budget_usd:
            return "budget_usd"
        if o.budget_tokens is not None and self.usage["total_tokens"] >= o.budget_tokens:
            return "budget_tokens"
        return None

    def request(self, stream: bool) -> ChatCompletionRequest:
        req = self.ctx.request
        update: dict[str, Any] = {"messages": self.messages, "stream": stream, "n": None}
        if self.offered:
            first = self.steps == 0
            update["tools"] = self.offered
            # A forced choice holds for the first turn only: forced on every turn, the loop would never end.
            update["tool_choice"] = (self.o.tool_choice or req.tool_choice) if first else (
                "none" if req.tool_choice == "none" else None)  # fmt: skip
            if not self.o.parallel_tool_calls:
                update["parallel_tool_calls"] = False
        return req.model_copy(update=update)

    async def model_call(self, stream: bool) -> RequestContext:
        ctx = self.ctx
        sub = RequestContext(request=self.request(stream), request_id=ctx.request_id, model=self.model,
                             application=ctx.application, caller=ctx.caller, attempts=ctx.attempts)  # fmt: skip
        sub.started = time.perf_counter()
        try:
            async with asyncio.timeout(self.remaining()):
                if stream:
                    await self.step.gateway.chat_stream(sub, self.model)
                else:
                    await self.step.gateway.chat(sub, self.model)
        except BaseException as e:
            self.turn_span(sub, type(e).__name__, {"portico.agent.turn": self.steps + 1})
            raise
        return sub

    def turn_span(self, sub: RequestContext, error: str | None, attrs: dict[str, Any]) -> None:
        self.spans.append(ChildSpan("agent", f"chat {self.model}", sub.started, time.perf_counter() - sub.started,
                                    error, {k: v for k, v in attrs.items() if v is not None}))  # fmt: skip

    def account(self, sub: RequestContext, finish: str | None, tool_calls: list[dict[str, Any]] | None) -> None:
        """Book a finished model call: its cost now, the run's usage, its span."""
        ctx = self.ctx
        usage = sub.usage or {}
        priced = ctx.attempts[-1].model if ctx.attempts else self.model  # a fallback is priced as itself
        usd = self.step.prices.charge(ctx, "agent", priced, sub.deployment, usage)
        for k in self.usage:
            self.usage[k] += int(usage.get(k) or 0)
        self.spent += usd
        self.steps += 1
        ctx.deployment = sub.deployment
        ctx.usage = dict(self.usage)
        ctx.state[ANSWER_CHARGED] = True  # every call is charged above: the summed usage is not priced again
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": self.model, "portico.deployment":
                 sub.deployment, "portico.agent.turn": self.steps, "gen_ai.usage.input_tokens":
                 usage.get("prompt_tokens"), "gen_ai.usage.output_tokens": usage.get("completion_tokens"),
                 "portico.cost_usd": round(usd, 8), "gen_ai.response.finish_reasons": [finish] if finish else None,
                 "portico.agent.tool_calls": [(c.get("function") or {}).get("name") for c in tool_calls or ()]
                 or None}  # fmt: skip
        self.turn_span(sub, None, attrs)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": self.steps, "tool_calls": self.calls, "cost_usd": round(self.spent, 8)}
        if self.stopped:
            out["stopped"] = self.stopped
        if self.citations:
            out["citations"] = self.citations
        if self.flagged:
            out["injection_flagged"] = self.flagged
        return out

    def finish_note(self) -> None:
        self.ctx.note("agent", steps=self.steps, tool_calls=len(self.calls), stopped=self.stopped,
                      tools=sorted({c["name"] for c in self.calls}) or None, injection_flagged=self.flagged or None,
                      cost_usd=round(self.spent, 8))  # fmt: skip

    # ---- tools --------------------------------------------------------------------------------------------

    async def run_tools(self, content: str | None, calls: list[dict[str, Any]]) -> str | None:
        """Run one turn's tool calls and append the turn and its results; the limit that ends the run, if any."""
        if len(self.calls) + len(calls) > self.o.max_tool_calls:
            return "max_tool_calls"
        ctx = self.ctx
        tctx = ToolContext(ctx.request_id, dict(ctx.caller), ctx.application, ctx, self.deadline)
        if self.o.parallel_tool_calls and len(calls) > 1:
            results = await asyncio.gather(*(self.one_tool(c, tctx) for c in calls))
        else:
            results = [await self.one_tool(c, tctx) for c in calls]
        self.messages.append(Message(role="assistant", content=content,
                                     tool_calls=[ToolCall.model_validate(c) for c in calls]))  # fmt: skip
        for c, (text, _, entry) in zip(calls, results, strict=True):
            self.messages.append(Message(role="tool", tool_call_id=c["id"], content=text))
            self.calls.append(entry)  # in the order of the calls, not of their completion
        stop = next((c for c, (_, stop, _) in zip(calls, results, strict=True) if stop), None)
        if stop is not None:
            self.stopped_by = (stop.get("function") or {}).get("name")
            return "injection"
        return None

    async def one_tool(self, call: dict[str, Any], tctx: ToolContext) -> tuple[str, bool, dict[str, Any]]:
        """(what the model reads, whether the injection screen stops the run, the call's summary)."""
        fn = call.get("function") or {}
        name = str(fn.get("name") or "")
        tool = self.server.get(name)
        started = time.perf_counter()
        if tool is None:
            known = ", ".join(sorted(self.server)) or "none"
            out = CallOutcome(name, "error", ToolResult(f"There is no tool named '{name}' here (tools: {known}).",
                                                        is_error=True), None, 0.0)  # fmt: skip
        else:
            out = await run_tool(tool, fn.get("arguments"), tctx, self.step.toolbox.gate,
                                 max_result_chars=self.o.max_result_chars)  # fmt: skip
        text, stop = out.result.content, False
        attrs: dict[str, Any] = {"portico.tool.name": name, "portico.tool.kind": tool.kind if tool else None,
                                 "portico.tool.write": tool.write if tool else None,
                                 "portico.tool.status": out.status, "portico.tool.call_id": call.get("id")}  # fmt: skip
        entry: dict[str, Any] = {"id": call.get("id"), "name": name, "status": out.status,
                                 "duration_ms": round(out.duration * 1000, 3)}  # fmt: skip
        screen = self.step.screen
        if screen is not None and tool is not None and out.status in _SCREENED:
            s = await screen.screen(text)
            attrs["portico.tool.injection.score"] = round(s.score, 4)
            if s.flagged:
                decision = screen.action
                self.flagged.append(name)
                attrs["portico.tool.injection.decision"] = entry["injection"] = decision
                attrs["portico.tool.injection.rules"] = s.rules or None
                if decision == "strip":
                    text = s.text
                stop = decision == "stop"
        if out.result.cost:
            self.step.prices.book(self.ctx, "agent", out.result.cost, tool=name)
            self.spent += out.result.cost
        self.citations.extend(c for c in out.result.citations if c not in self.citations)
        self.step.calls.labels(name if tool else "unknown", out.status).inc()
        content = {"portico.tool.arguments": _clip(fn.get("arguments")), "portico.tool.result": _clip(text)}
        self.spans.append(ChildSpan("agent", f"tool {name}", started, time.perf_counter() - started,
                                    None if out.status == "ok" else out.status,
                                    {k: v for k, v in attrs.items() if v is not None}, content))  # fmt: skip
        return text, stop, entry

    # ---- without streaming ---------------------------------------------------------------------------------

    async def complete(self) -> None:
        while (reason := self.limit()) is None:
            try:
                sub = await self.model_call(stream=False)
            except TimeoutError:
                reason = "time_limit"
                break
            resp = sub.response or {}
            choice = (resp.get("choices") or [{}])[0]
            msg = choice.get("message") or {}
            calls = _with_ids(msg.get("tool_calls") or [])
            self.account(sub, choice.get("finish_reason"), calls)
            if not calls:
                return self.answer(resp)
            client = [c for c in calls if (c.get("function") or {}).get("name") in self.client_names]
            if client:  # the client runs its own tools: the turn goes back to it (server calls in it are dropped)
                msg["tool_calls"] = client
                choice["finish_reason"] = "tool_calls"
                return self.answer(resp)
            # No timeout around the tools: run_tool ends every call by the run's deadline, and a call that ran
            # out of time is a tool message and a span like any other.
            if (reason := await self.run_tools(msg.get("content"), calls)) is not None:
                break
        self.stopped = reason
        text = limit_message(reason, self.o, self.stopped_by)
        self.answer(completion_dict(model=self.shown_model, choices=[choice_dict(0, text, "stop")], usage=None))

    def answer(self, resp: dict[str, Any]) -> None:
        resp["usage"] = dict(self.usage)
        ext = resp.setdefault("portico", {})
        if isinstance(ext, dict):
            ext["agent"] = self.summary()
        ctx = self.ctx
        ctx.response = resp
        ctx.usage = dict(self.usage)
        ctx.deployment = ctx.deployment or "portico/agent"
        self.finish_note()

    # ---- streaming ----------------------------------------------------------------------------------------

    async def open_stream(self) -> None:
        try:
            self._first = await self.model_call(stream=True)
        except TimeoutError:
            self._first_reason = "time_limit"
            return
        self.ctx.deployment = self._first.deployment  # the response headers name it before the stream runs

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return chunk_dict(id=self.id, model=self.shown_model, created=self.created,
                          choices=[delta_choice(0, delta, finish)])  # fmt: skip

    def last_chunks(self, finish: str) -> list[dict[str, Any]]:
        end = self.chunk({}, finish)
        end["portico"] = {"agent": self.summary()}
        usage = chunk_dict(id=self.id, model=self.shown_model, created=self.created, choices=[], usage=dict(self.usage))
        self.finish_note()
        return [end, usage]

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        yield self.chunk({"role": "assistant", "content": ""})
        sub, reason, sent_text = self._first, self._first_reason, False
        self._first = None
        try:
            while reason is None:
                if sub is None:
                    if (reason := self.limit()) is not None:
                        break
                    try:
                        sub = await self.model_call(stream=True)
                    except TimeoutError:
                        reason = "time_limit"
                        break
                seen: list[dict[str, Any]] = []
                try:
                    async for piece in self.relay(sub, seen):
                        sent_text = True
                        yield piece
                except TimeoutError:
                    reason = "time_limit"
                    self.turn_span(sub, "TimeoutError", {"portico.agent.turn": self.steps + 1})
                    break
                finally:
                    if sub.stream is not None:
                        await sub.stream.aclose()  # type: ignore[attr-defined]
                turn = assemble(seen)
                if turn is None:
                    raise UpstreamError("the upstream stream ended before the turn was complete", status=502)
                choice = turn["choices"][0]
                calls = _with_ids(choice["message"].get("tool_calls") or [])
                self.account(sub, choice.get("finish_reason"), calls)
                sub = None
                if not calls:
                    for c in self.last_chunks(choice.get("finish_reason") or "stop"):
                        yield c
                    return
                client = [c for c in calls if (c.get("function") or {}).get("name") in self.client_names]
                if client:
                    yield self.chunk({"tool_calls": [dict(c, index=i) for i, c in enumerate(client)]})
                    for c in self.last_chunks("tool_calls"):
                        yield c
                    return
                names = ", ".join((c.get("function") or {}).get("name") or "?" for c in calls)
                yield comment_chunk(f"portico agent: running {names}")
                task = asyncio.ensure_future(self.run_tools(choice["message"].get("content"), calls))
                try:  # run_tool ends every call by the run's deadline
                    while not (await asyncio.wait({task}, timeout=self.o.keepalive_seconds))[0]:
                        yield comment_chunk("portico agent: tools still running")
                    reason = task.result()
                finally:
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(BaseException):
                            await task
            self.stopped = reason
            text = limit_message(reason or "time_limit", self.o, self.stopped_by)
            yield self.chunk({"content": ("\n\n" if sent_text else "") + text})
            for c in self.last_chunks("stop"):
                yield c
        finally:
            if sub is not None and sub.stream is not None:
                await sub.stream.aclose()  # type: ignore[attr-defined]

    async def relay(self, sub: RequestContext, seen: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
        """One streamed turn: its text passed on as it comes; every chunk kept in ``seen`` (tool calls)."""
        assert sub.stream is not None
        it = sub.stream
        while True:
            try:
                async with asyncio.timeout(self.remaining()):
                    chunk = await anext(it)
            except StopAsyncIteration:
                return
            seen.append(chunk)
            if chunk.get("model"):
                self.shown_model = chunk["model"]
            for c in chunk.get("choices") or ():
                text = (c.get("delta") or {}).get("content")
                if text:
                    yield self.chunk({"content": text})


def _with_ids(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tool calls with ids (a tool message answers one by its id; not every upstream sends them)."""
    for c in calls:
        c["id"] = c.get("id") or new_tool_call_id()
    return calls


def _clip(value: Any, limit: int = 8000) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= limit else text[:limit] + f"… [{len(text)} characters]"
