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

from portico.actions.approvals import ApprovalQueue, inband
from portico.actions.execute import CallOutcome, run_tool
from portico.actions.permissions import tool_allowed
from portico.actions.tool import Tool, ToolContext, ToolResult
from portico.gateway.costing import ANSWER_CHARGED
from portico.guardrails.pii.masking import unmask
from portico.guardrails.pii.step import MAPPING as PII_MAPPING
from portico.pipeline.context import CHILD_SPANS, REQUEST_TOOLS, TOOL_EVENTS, ChildSpan, RequestContext
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
from portico.protocol.errors import UpstreamError

LIMITS = {
    "max_steps": "its limit of {max_steps} model calls (max_steps)",
    "max_tool_calls": "its limit of {max_tool_calls} tool calls (max_tool_calls)",
    "time_limit": "its time limit of {time_limit:g} seconds (time_limit)",
    "budget_usd": "its budget of {budget_usd:g} USD (budget_usd)",
    "budget_tokens": "its budget of {budget_tokens} tokens (budget_tokens)",
}
_DECISION_POLL = 0.25  # seconds between looks at a pending approval while a run waits for it
# Statuses where the text the model reads comes from outside (a tool, its upstream): screened for injections.
_SCREENED = frozenset({"ok", "error"})


def limit_message(reason: str, options: Any, tool: str | None = None) -> str:
    if reason == "approval":  # the client answers the approval request; nothing more to say until then
        return ""
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
        # Only what this caller's key may use is offered (run_tool checks again before a call).
        self.server: dict[str, Tool] = {t.name: t for t in step.toolbox.expand(o.tools) if tool_allowed(ctx.caller, t)}
        # Tools the request brought (the Responses API's built-ins): each call of one is reported as an event, and a
        # call that waits for approval ends the run (the client answers it on its next request).
        extra = [t for t in ctx.state.get(REQUEST_TOOLS) or () if tool_allowed(ctx.caller, t)]
        self.server.update((t.name, t) for t in extra)
        self.reported = {t.name for t in extra}
        # {call_id, name, arguments, status, content, data, approval_id} or {said}: read by the Responses endpoint
        self.events: list[dict[str, Any]] = ctx.state.setdefault(TOOL_EVENTS, [])
        self._events_sent = 0
        client = [t for t in req.tools or () if t.function.name not in self.server]
        self.client_names = {t.function.name for t in client}
        self.offered = [step.spec(t) for t in self.server.values()] + client
        self.messages: list[Message] = list(req.messages)
        self.deadline = time.monotonic() + o.time_limit
        self.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.spent = 0.0
        self.steps = 0
        self.calls: list[dict[str, Any]] = []  # one summary per tool call
        self.citations: list[dict[str, Any]] = []
        self.flagged: list[str] = []
        self.approvals: list[str] = []  # write actions of this run still waiting for a human
        self.stopped: str | None = None
        self.stopped_by: str | None = None  # the tool whose output stopped the run
        self.spans: list[ChildSpan] = ctx.state.setdefault(CHILD_SPANS, [])
        # Streams only: one id for every chunk of the run, and the first turn opened before the stream starts.
        self.id = new_completion_id()
        self.created = int(time.time())
        self.shown_model = model
        self._first: RequestContext | None = None
        self._first_reason: str | None = None

    async def prepare(self) -> None:
        """In-band decisions of the caller first, then what became of the actions this conversation asked for."""
        gate = self.step.toolbox.gate
        if not isinstance(gate, ApprovalQueue):
            return
        note = await inband.updates(gate, self.messages, await inband.apply_decisions(gate, self.ctx))
        if note is not None:
            self.messages.append(note)
        decided = self.ctx.state.get(inband.DECISIONS) or {}
        for aid in decided.get("approve") or ():  # an approved call of a request tool ran just now: report it
            row = await gate.get(aid)
            if row["tool"] in self.reported and row["status"] in ("executed", "failed"):
                result = row.get("result") or {}
                self.events.append({"call_id": aid, "name": row["tool"], "arguments": _clip(row["arguments"]),
                                    "status": "ok" if row["status"] == "executed" else "error",
                                    "content": str(result.get("content") or ""), "data": result.get("data"),
                                    "approval_id": aid})  # fmt: skip

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
        update: dict[str, Any] = {"messages": list(self.messages), "stream": stream, "n": None}
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
        ctx.state[ANSWER_CHARGED] = "agent"  # every call is charged above: the summed usage is not priced again
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": self.model, "portico.deployment":
                 sub.deployment, "portico.agent.turn": self.steps, "gen_ai.usage.input_tokens":
                 usage.get("prompt_tokens"), "gen_ai.usage.output_tokens": usage.get("completion_tokens"),
                 "portico.cost_usd": round(usd, 8), "gen_ai.response.finish_reasons": [finish] if finish else None,
                 "portico.agent.requested_tools": [(c.get("function") or {}).get("name") for c in tool_calls or ()]
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
        waiting = len(self.approvals)
        ctx = self.ctx
        # reason: what the model said in the turn that asked (an approver sees it next to a write action)
        tctx = ToolContext(ctx.request_id, dict(ctx.caller), ctx.application, ctx, self.deadline, reason=content)
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
        if self.reported and any(e.get("status") == "pending_approval" for e in self.events) and \
                len(self.approvals) > waiting:  # fmt: skip
            return "approval"
        return None

    def event_chunks(self) -> list[dict[str, Any]]:
        """Request-tool calls not yet streamed, as comment chunks that carry the event (chat clients see a
        comment line; the Responses stream turns each into its output item)."""
        out = [comment_chunk(f"portico agent: {e['name']} {e['status']}") | {"tool_event": e}
               for e in self.events[self._events_sent :]]  # fmt: skip
        self._events_sent = len(self.events)
        return out

    def start_chunks(self, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The request-tool calls about to run, as comment chunks that carry ``tool_start`` (the Responses stream opens
        each call's item now; its ``tool_event`` closes it). A call that may wait for approval, or a turn over the
        tool-call limit, is not announced: what it becomes is known only at its end."""
        if len(self.calls) + len(calls) > self.o.max_tool_calls:
            return []
        out = []
        for c in calls:
            fn = c.get("function") or {}
            tool = self.server.get(str(fn.get("name") or ""))
            if tool is None or tool.name not in self.reported or tool.write or getattr(tool, "needs_approval", False):
                continue
            start = {"call_id": c.get("id"), "name": tool.name, "arguments": fn.get("arguments") or ""}
            out.append(comment_chunk(f"portico agent: {tool.name} started") | {"tool_start": start})
        return out

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
            gate = self.step.toolbox.gate
            # A pii step masked the conversation: the model wrote placeholders, the operator's tool needs the values.
            mapping = self.ctx.state.get(PII_MAPPING)
            raw = fn.get("arguments")
            if mapping and isinstance(raw, str):
                raw = unmask(raw, mapping)
            out = await run_tool(tool, raw, tctx, gate, max_result_chars=self.o.max_result_chars)
            if out.status == "pending_approval" and out.approval_id:
                out = await self.await_decision(tool, out)
                if out.status == "pending_approval":
                    self.approvals.append(out.approval_id)
            record = getattr(gate, "record_call", None)  # the approval queue audits every call
            if record is not None:
                await record(out, tctx, "agent")
        text, stop = out.result.content, False
        if mapping := self.ctx.state.get(PII_MAPPING):  # values the model only knows as placeholders stay masked
            text = remask(text, mapping)
        attrs: dict[str, Any] = {"portico.tool.name": name, "portico.tool.kind": tool.kind if tool else None,
                                 "portico.tool.write": tool.write if tool else None,
                                 "portico.tool.status": out.status, "portico.tool.call_id": call.get("id")}  # fmt: skip
        entry: dict[str, Any] = {"id": call.get("id"), "name": name, "status": out.status,
                                 "duration_ms": round(out.duration * 1000, 3)}  # fmt: skip
        if self.step.screen is not None and tool is not None and out.status in _SCREENED:
            text, stop = await self.screen(name, text, attrs, entry)
        if name in self.reported:
            self.events.append({"call_id": call.get("id"), "name": name, "arguments": fn.get("arguments") or "",
                                "status": out.status, "content": text, "data": out.result.data,
                                "approval_id": out.approval_id})  # fmt: skip
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

    async def screen(self, name: str, text: str, attrs: dict[str, Any], entry: dict[str, Any]) -> tuple[str, bool]:
        """A tool's output through the injection screen: (what the model reads, whether the run stops)."""
        screen = self.step.screen
        s = await screen.screen(text)
        attrs["portico.tool.injection.score"] = round(s.score, 4)
        if not s.flagged:
            return text, False
        self.flagged.append(name)
        attrs["portico.tool.injection.decision"] = entry["injection"] = screen.action
        attrs["portico.tool.injection.rules"] = s.rules or None
        return (s.text if screen.action == "strip" else text), screen.action == "stop"

    async def await_decision(self, tool: Tool, out: CallOutcome) -> CallOutcome:
        """A write waiting for approval: wait up to its ``approval.wait`` (within the run's time) for a human's
        decision; an approved action has already run, once, in the approving process — its result is the answer."""
        gate = self.step.toolbox.gate
        started = time.perf_counter()
        wait = gate.policy(tool).wait if hasattr(gate, "policy") else 0.0
        until = min(time.monotonic() + wait, self.deadline)
        while time.monotonic() < until:
            await asyncio.sleep(min(_DECISION_POLL, max(0.0, until - time.monotonic())))
            row = await gate.get(out.approval_id)
            status = row["status"]
            if status in ("executed", "failed"):
                r = row.get("result") or {}
                result = ToolResult(str(r.get("content") or ""), data=r.get("data"), is_error=status == "failed")
                return CallOutcome(tool.name, "ok" if status == "executed" else "error", result, out.arguments,
                                   out.duration + (time.perf_counter() - started), out.approval_id)  # fmt: skip
            if status in ("denied", "expired"):
                why = f": {row['note']}" if row.get("note") else ""
                result = ToolResult(f"The action '{tool.name}' was {status} and did not run{why}.", is_error=True)
                return CallOutcome(tool.name, "denied", result, out.arguments,
                                   out.duration + (time.perf_counter() - started), out.approval_id)  # fmt: skip
        return out

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
            if msg.get("content") and self.reported:  # said before its calls: the Responses output keeps it there
                self.events.append({"said": msg["content"]})
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
        ctx = self.ctx
        if isinstance(ext, dict):
            ext["agent"] = self.summary()
            if self.approvals:
                ext["approvals"] = list(self.approvals)
        if self.approvals:  # streams carry the ids in their last chunk: headers leave before the run ends
            ctx.headers["x-portico-approvals"] = ",".join(self.approvals)
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
        if self.approvals:
            end["portico"]["approvals"] = list(self.approvals)
        usage = chunk_dict(id=self.id, model=self.shown_model, created=self.created, choices=[], usage=dict(self.usage))
        self.finish_note()
        return [end, usage]

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        yield self.chunk({"role": "assistant", "content": ""})
        for c in self.event_chunks():  # calls approved by this request, run before the first turn
            yield c
        sub, reason, sent_text = self._first, self._first_reason, False
        self._first = None
        try:
            while reason is None:
                if sub is None:
                    if (reason := self.limit()) is not None:
                        break
                    call = asyncio.ensure_future(self.model_call(stream=True))
                    async with contextlib.aclosing(
                        self.keepalive(call, "portico agent: waiting for the model")
                    ) as notes:
                        async for note in notes:
                            yield note
                    try:
                        sub = call.result()
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
                for c in self.start_chunks(calls):
                    yield c
                tools = asyncio.ensure_future(self.run_tools(choice["message"].get("content"), calls))
                async with contextlib.aclosing(self.keepalive(tools, "portico agent: tools still running")) as notes:
                    async for note in notes:
                        yield note  # run_tool ends every call by the run's deadline
                reason = tools.result()
                for c in self.event_chunks():
                    yield c
            self.stopped = reason
            text = limit_message(reason or "time_limit", self.o, self.stopped_by)
            if text:
                yield self.chunk({"content": ("\n\n" if sent_text else "") + text})
            for c in self.last_chunks("stop"):
                yield c
        finally:
            if sub is not None and sub.stream is not None:
                await sub.stream.aclose()  # type: ignore[attr-defined]

    async def keepalive(self, task: asyncio.Future[Any], note: str) -> AsyncIterator[dict[str, Any]]:
        """Comment lines every ``keepalive_seconds`` until ``task`` is done (it is cancelled if the stream closes)."""
        try:
            while not (await asyncio.wait({task}, timeout=self.o.keepalive_seconds))[0]:
                yield comment_chunk(note)
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task

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


def remask(text: str, mapping: dict[str, str]) -> str:
    """The request's known personal values in a tool result back to their placeholders (longest first, so a value
    inside another is not replaced within it). New personal data a tool returns is not detected here."""
    for name, value in sorted(mapping.items(), key=lambda kv: -len(kv[1])):
        if value and value in text:
            text = text.replace(value, f"[{name}]")
    return text


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
