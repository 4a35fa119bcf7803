"""Output checks and failure policies with a scripted gateway; the handoff step and store on a real SQLite db."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from portico.guardrails.handoffs import HandoffStore, anger_score, handoff_step
from portico.guardrails.output import judge_score, output_checks_step
from portico.pipeline.context import Attempt, RequestContext
from portico.protocol.chat import ChatCompletionRequest, choice_dict, completion_chunks, completion_dict
from portico.protocol.errors import UpstreamError
from portico.storage.db import Database


def answer(text: str) -> dict[str, Any]:
    return completion_dict(model="m", choices=[choice_dict(0, text, "stop")], usage=None)


class ScriptedGateway:
    """Answers each call with the next scripted text and records which model was called."""

    def __init__(self, texts: list[str]) -> None:
        self.texts = list(texts)
        self.calls: list[str] = []

    async def chat(self, ctx: RequestContext, model: str) -> None:
        self.calls.append(model)
        ctx.attempts.append(Attempt(deployment=model, model=model, started=0.0, status=200))
        ctx.response = answer(self.texts.pop(0))

    async def chat_stream(self, ctx: RequestContext, model: str) -> None:
        await self.chat(ctx, model)
        assert ctx.response is not None
        ctx.stream, ctx.response = _aiter(completion_chunks(ctx.response)), None


async def _aiter(items: list[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for i in items:
        yield i


class App:
    name = "app"
    model = "main"


class Cfg:
    applications = [App()]


class Services:
    def __init__(self, gateway: Any, db: Any = None) -> None:
        self.gateway = gateway
        self.cfg = Cfg()
        self.db = db
        self.metrics = None


def ctx_for(text: str = "hi", stream: bool = False, **kw: Any) -> RequestContext:
    req = ChatCompletionRequest(model="app", messages=[{"role": "user", "content": text}], stream=stream, **kw)
    return RequestContext(request=req, request_id="r1", model="app", application="app")


JSON_FORMAT = {"type": "json_object"}
SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "x", "schema": {
    "type": "object", "required": ["ok"], "properties": {"ok": {"type": "boolean"}}}}}  # fmt: skip


async def test_malformed_json_is_retried_then_falls_back_then_fails() -> None:
    gw = ScriptedGateway(["still not json", "nope"])
    step = output_checks_step({"on_fail": {"retry": 1, "fallback": ["backup"]}}, Services(gw))
    ctx = ctx_for(response_format=JSON_FORMAT)
    ctx.response = answer("not json")
    with pytest.raises(UpstreamError) as e:
        await step.run(ctx)
    assert gw.calls == ["main", "backup"] and e.value.status == 502
    assert ctx.state["trace.notes"]["output_checks"] == {"decision": "fail", "failed": ["json"],
                                                        "retried": ["main", "backup"], "review": False}  # fmt: skip


async def test_recovers_on_fallback_and_notes_it() -> None:
    gw = ScriptedGateway(["{bad", '{"ok": true}'])
    step = output_checks_step({"on_fail": {"retry": 1, "fallback": ["backup"]}}, Services(gw))
    ctx = ctx_for(response_format=SCHEMA_FORMAT)
    ctx.response = answer('{"ok": "yes"}')  # valid JSON, wrong schema
    await step.run(ctx)
    assert gw.calls == ["main", "backup"]
    assert ctx.response is not None and ctx.response["choices"][0]["message"]["content"] == '{"ok": true}'
    assert ctx.state["trace.notes"]["output_checks"]["decision"] == "recovered"


async def test_stock_answer_or_502_when_everything_fails() -> None:
    step = output_checks_step({"on_fail": {"answer": "Sorry."}}, Services(ScriptedGateway([])))
    ctx = ctx_for()
    ctx.response = answer("   ")
    await step.run(ctx)
    assert ctx.answered_by == "output_checks" and ctx.response["choices"][0]["message"]["content"] == "Sorry."
    strict = output_checks_step({}, Services(ScriptedGateway([])))
    ctx = ctx_for()
    ctx.response = answer("")
    with pytest.raises(UpstreamError):
        await strict.run(ctx)


async def test_patterns_keywords_and_pii() -> None:
    keywords = [{"words": ["Globex"], "action": "block"}, {"words": ["refund"], "action": "review"}]
    opts = {"forbid": ["(?i)as an ai"], "pii": ["EMAIL_ADDRESS"], "on_fail": {"answer": "x"}, "keywords": keywords}
    step = output_checks_step(opts, Services(ScriptedGateway([])))
    for bad in ["As an AI I cannot", "Try Globex instead", "write to bob@example.com"]:
        ctx = ctx_for()
        ctx.response = answer(bad)
        await step.run(ctx)
        assert ctx.answered_by == "output_checks", bad
    ctx = ctx_for()
    ctx.response = answer("Your refund for [EMAIL_ADDRESS_1] is on its way")  # a placeholder is not a leak
    await step.run(ctx)
    assert ctx.answered_by is None and ctx.headers["x-portico-review"] == "keyword"


async def test_stream_hold_back_all_checks_before_the_client_sees_text() -> None:
    gw = ScriptedGateway(['{"ok": true}'])
    step = output_checks_step({"hold_back": "all", "on_fail": {"retry": 1}}, Services(gw))
    ctx = ctx_for(stream=True, response_format=JSON_FORMAT)
    ctx.stream = _aiter(completion_chunks(answer("not json")))
    await step.run(ctx)
    assert gw.calls == ["main"] and ctx.stream is None
    assert ctx.response is not None and ctx.response["choices"][0]["message"]["content"] == '{"ok": true}'


async def test_stream_window_cuts_a_forbidden_answer() -> None:
    step = output_checks_step({"hold_back": 40, "forbid": ["secret plan"], "on_fail": {"answer": "[removed]"}},
                              Services(ScriptedGateway([])))  # fmt: skip
    ctx = ctx_for(stream=True)
    words = ["Here ", "is ", "the ", "secret ", "plan: ", "step one"]
    ctx.stream = _aiter([{"id": "c", "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
                         for w in words])  # fmt: skip
    await step.run(ctx)
    assert ctx.stream is not None
    out = "".join(c["choices"][0]["delta"].get("content") or "" for c in [c async for c in ctx.stream])
    assert "secret" not in out and out.endswith("[removed]")


def test_anger_score() -> None:
    assert anger_score("This is RIDICULOUS, the worst service, useless!!!") >= 3
    assert anger_score("Thanks, that helped a lot.") == 0


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    d = Database(f"sqlite:///{tmp_path}/h.db")
    await d.create_schema()
    yield d
    await d.close()


async def test_handoff_step_phrase_then_waiting_then_resolved(db: Database) -> None:
    step = handoff_step({"max_turns": 5}, Services(None, db))
    store = HandoffStore(db)
    ctx = ctx_for("I want to talk to a human now", metadata={"conversation_id": "c1"})
    await step.run(ctx)
    assert ctx.answered_by == "handoff"
    (row,) = await store.list(status="open")
    assert row["conversation_id"] == "c1" and row["reason"].startswith("phrase")
    later = ctx_for("hello?", metadata={"conversation_id": "c1"})
    await step.run(later)
    assert later.answered_by == "handoff" and later.headers["x-portico-handoff"] == row["id"]
    got = await store.get(row["id"])
    assert got is not None and [m["content"] for m in got["messages"]][-1] == "hello?"
    await store.update(row["id"], status="resolved")
    again = ctx_for("one more question", metadata={"conversation_id": "c1"})
    await step.run(again)
    assert again.answered_by is None


async def test_handoff_turn_limit(db: Database) -> None:
    step = handoff_step({"max_turns": 2, "phrases": []}, Services(None, db))
    msgs = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}] * 2
    req = ChatCompletionRequest(model="app", messages=[*msgs, {"role": "user", "content": "c"}])
    ctx = RequestContext(request=req, request_id="r2", model="app", application="app")
    await step.run(ctx)
    assert ctx.answered_by == "handoff" and ctx.state["trace.notes"]["handoff"]["reason"].startswith("turn limit")


def test_judge_score_scales() -> None:
    assert judge_score("7.5") == 0.75 and judge_score("Score: 7/10") == 0.7 and judge_score("85", 100) == 0.85
    assert judge_score("12") == 1.0
    assert judge_score("no idea") is None


async def test_ai_judge_fails_a_bad_answer_and_the_fallback_passes() -> None:
    # Calls in order: judge of the first answer ("2" → 0.2), the fallback answer, the judge of that ("9").
    gw = ScriptedGateway(["2", "A careful, correct answer.", "9"])
    opts = {"judge": {"model": "judge", "min_score": 0.5}, "on_fail": {"fallback": ["backup"]}}
    step = output_checks_step(opts, Services(gw))
    ctx = ctx_for("What is 2+2?")
    ctx.response = answer("whatever")
    await step.run(ctx)
    assert gw.calls == ["judge", "backup", "judge"]
    assert ctx.response["choices"][0]["message"]["content"] == "A careful, correct answer."
    assert ctx.state["trace.notes"]["output_checks"]["judge_score"] == 0.9


async def test_best_of_n_picks_the_highest_judged_passing_answer() -> None:
    class Parallel(ScriptedGateway):
        async def chat(self, ctx: RequestContext, model: str) -> None:
            self.calls.append(model)
            ctx.attempts.append(Attempt(deployment=model, model=model, started=0.0, status=200))
            if model == "judge":  # the judge scores the answer it is shown
                text = ctx.request.messages[-1].content or ""
                ctx.response = answer("8" if "good" in text else "6" if "fine" in text else "1")
            else:
                ctx.response = answer(self.texts.pop(0))

    gw = Parallel(["a fine answer", "a good answer", "bad"])
    step = output_checks_step({"judge": {"model": "judge"}, "on_fail": {"best_of": 3}}, Services(gw))
    ctx = ctx_for("question")
    ctx.response = answer("bad")
    await step.run(ctx)
    assert ctx.response["choices"][0]["message"]["content"] == "a good answer"
    assert gw.calls.count("main") == 3 and ctx.state["trace.notes"]["output_checks"]["best_of_passed"] == 2
