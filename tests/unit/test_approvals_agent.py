"""Approvals inside agent runs: ids in the answer (header, body, last stream chunk), decisions made in-band by the
asking key (by: user), and what became of an action told to the model when the conversation comes back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from portico.actions.approvals.inband import DECISIONS, decisions_from_headers
from portico.config.loader import validate
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.runtime import Runtime
from tests.scripted_upstream import ScriptedUpstream, Turn
from tests.unit.test_actions_agent import ToolServer


@pytest.fixture
async def tool_server() -> AsyncIterator[ToolServer]:
    async with ToolServer() as s:
        yield s


def make(tmp: Path, up: ScriptedUpstream, tools: ToolServer) -> Runtime:
    refund = {"type": "object", "properties": {"order_id": {"type": "string"}}}
    cfg = validate({
        "state_dir": str(tmp),
        "models": [{"name": "m", "deployments": [{"provider": "openai", "model": "s", "base_url": f"{up.url}/v1"}]}],
        "tools": [
            {"name": "refund", "kind": "http", "url": f"{tools.url}/refund", "method": "POST", "write": True,
             "parameters": refund},
            {"name": "self_refund", "kind": "http", "url": f"{tools.url}/refund", "method": "POST", "write": True,
             "parameters": refund, "approval": {"by": "user"}},
        ],
        "applications": [{"name": "bot", "model": "m",
                          "steps": [{"use": "agent", "tools": ["refund", "self_refund"]}]}],
    })  # fmt: skip
    return Runtime(cfg)


async def caller(rt: Runtime) -> dict[str, Any]:
    rec, _ = await rt.keys.create("team", tools=["*"])
    return {"key": rec.name, "key_id": rec.id, "tools": rec.tools}


async def run(rt: Runtime, messages: list[dict[str, Any]], who: dict[str, Any], *, stream: bool = False,
              decisions: dict[str, list[str]] | None = None) -> RequestContext:  # fmt: skip
    req = ChatCompletionRequest.model_validate({"model": "bot", "messages": messages, "stream": stream})
    pipeline, app = rt.pipeline_for("bot")
    ctx = RequestContext(request=req, request_id="r", model="bot", application=app, caller=who)
    if decisions:
        ctx.state[DECISIONS] = decisions
    await pipeline.run(ctx)
    return ctx


def follow_up(first: RequestContext, question: str) -> list[dict[str, Any]]:
    """The conversation as a client sends it back: its first turn, the tool call, the tool's answer, the reply."""
    sent = first.request.messages[0].model_dump(exclude_none=True)
    pending = first.response["portico"]["approvals"][0]
    call = {"id": "c1", "type": "function", "function": {"name": "refund", "arguments": "{}"}}
    return [sent, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": f"... awaits approval (approval id {pending}) ..."},
            {"role": "assistant", "content": first.response["choices"][0]["message"]["content"]},
            {"role": "user", "content": question}]  # fmt: skip


def system_notes(up: ScriptedUpstream) -> list[str]:
    return [m["content"] for m in up.requests[-1].body["messages"] if m["role"] == "system"]


async def test_ids_in_the_answer_and_the_outcome_told_on_return(tmp_path: Path, tool_server: ToolServer) -> None:
    up = ScriptedUpstream([Turn.call("refund", order_id="A1"), Turn.say("Queued for approval.")])
    rt = make(tmp_path, up, tool_server)
    async with up:
        await rt.start()
        try:
            who = await caller(rt)
            first = await run(rt, [{"role": "user", "content": "Refund A1"}], who)
            (aid,) = first.response["portico"]["approvals"]
            assert first.headers["x-portico-approvals"] == aid and tool_server.idempotency == []
            await rt.approvals.approve(aid, "alice")
            assert tool_server.idempotency == [aid]
            up.script = [Turn.say("It is done.")]
            await run(rt, follow_up(first, "Is it done?"), who)
            (note,) = system_notes(up)
            assert f"Action {aid} (refund) was approved and executed" in note and '"refunded":true' in note
            up.script = [Turn.call("refund", order_id="A2"), Turn.say("Queued.")]
            streamed = await run(rt, [{"role": "user", "content": "Refund A2"}], who, stream=True)
            chunks = [c async for c in streamed.stream]
            last = next(c for c in reversed(chunks) if c.get("portico"))
            assert last["portico"]["approvals"][0].startswith("appr_") and "x-portico-approvals" not in streamed.headers
        finally:
            await rt.close()


async def test_the_asking_key_decides_in_band_only_its_own_user_approvals(
    tmp_path: Path, tool_server: ToolServer
) -> None:
    up = ScriptedUpstream([Turn.calls(("self_refund", {"order_id": "A1"}), ("refund", {"order_id": "B1"})),
                           Turn.say("Both wait for approval.")])  # fmt: skip
    rt = make(tmp_path, up, tool_server)
    async with up:
        await rt.start()
        try:
            who = await caller(rt)
            first = await run(rt, [{"role": "user", "content": "Refund A1 and B1"}], who)
            own, operators = first.response["portico"]["approvals"]
            up.script = [Turn.say("Done.")]
            headers = {"x-portico-approve": f"{own}, {operators}"}
            decisions = decisions_from_headers(headers)
            assert decisions == {"approve": [own, operators], "deny": []}
            await run(rt, follow_up(first, "Go ahead"), who, decisions=decisions)
            assert tool_server.idempotency == [own]  # the operator-only action did not run
            assert (await rt.approvals.get(own))["decided_by"] == "team"
            assert (await rt.approvals.get(operators))["status"] == "pending"
            (note,) = system_notes(up)
            assert f"approve {operators} was not applied" in note
            assert f"Action {own} (self_refund) was approved and executed" in note
            assert decisions_from_headers({"x-portico-deny": "nothing here"}) is None
        finally:
            await rt.close()
