"""The condense step with a stub gateway (a fixed summary and usage): what it replaces for each ``what``, its
condition, its notes (tokens before/after, both calls' costs) and that a summary no shorter is not used."""

from __future__ import annotations

from typing import Any

import pytest

from portico.config.loader import validate
from portico.context.condense import CondenseStep
from portico.gateway.costing import PriceBook
from portico.pipeline import RequestContext
from portico.protocol.chat import ChatCompletionRequest

DEAD = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}
CFG = validate({"models": [
    {"name": "small", "deployments": [{**DEAD, "name": "small-dep", "price": {"input": 1.0, "output": 2.0}}]},
    {"name": "big", "deployments": [{**DEAD, "name": "big-dep", "price": {"input": 10.0, "output": 30.0}}]},
]})  # fmt: skip


class StubGateway:
    def __init__(self, summary: str) -> None:
        self.summary = summary
        self.prompts: list[str] = []

    async def chat(self, ctx: RequestContext, model: str) -> None:
        self.prompts.append(ctx.request.messages[-1].text())
        ctx.response = {"choices": [{"message": {"role": "assistant", "content": self.summary}}]}
        ctx.usage = {"prompt_tokens": 1000, "completion_tokens": 50}
        ctx.deployment = "small-dep"


class Services:
    def __init__(self, summary: str) -> None:
        self.cfg = CFG
        self.gateway = StubGateway(summary)
        self.prices = PriceBook(CFG)


def ctx_of(*messages: tuple[str, str]) -> RequestContext:
    req = ChatCompletionRequest.model_validate(
        {"model": "app", "messages": [{"role": r, "content": c} for r, c in messages]}
    )
    return RequestContext(request=req, request_id="r1", model="app")


LONG = "The trial enrolled 4,000 patients. " * 100


async def test_condenses_the_last_user_message_and_notes_tokens_and_cost() -> None:
    svc = Services("4,000 patients were enrolled.")
    step = CondenseStep({"model": "small", "what": "user", "when": "tokens.input > 500", "target_tokens": 64}, svc)
    ctx = ctx_of(("system", "Be brief."), ("user", LONG))
    await step.run(ctx)
    assert [m.text() for m in ctx.request.messages] == ["Be brief.", "4,000 patients were enrolled."]
    note = ctx.state["trace.notes"]["condense"]
    assert note["condensed"] is True and note["tokens_before"] > 800 and note["tokens_after"] < 20
    assert note["condense_cost_usd"] == pytest.approx((1000 * 1.0 + 50 * 2.0) / 1e6)
    assert "at most 48 words" in svc.gateway.prompts[0]
    # the answer's cost is noted by the closer, once the big model answered
    ctx.usage, ctx.deployment, ctx.model = {"prompt_tokens": 30, "completion_tokens": 10}, "big-dep", "big"
    await step.closer.run(ctx)
    assert ctx.state["trace.notes"]["condense"]["answer_cost_usd"] == pytest.approx((30 * 10 + 10 * 30) / 1e6)
    assert PriceBook(CFG).request_cost(ctx) == pytest.approx((1100 + 600) / 1e6)  # both calls are billed


async def test_condition_false_skips_the_call() -> None:
    svc = Services("x")
    step = CondenseStep({"model": "small", "what": "user", "when": "tokens.input > 5000"}, svc)
    ctx = ctx_of(("user", "short question"))
    await step.run(ctx)
    assert svc.gateway.prompts == [] and ctx.state["trace.notes"]["condense"]["condensed"] is False


async def test_condenses_retrieved_chunks_into_one_with_its_sources() -> None:
    step = CondenseStep({"model": "small", "what": "retrieved"}, Services("short summary"))
    ctx = ctx_of(("user", "how many patients?"))
    ctx.documents = [{"id": "a#0", "text": LONG, "score": 0.9}, {"id": "b#0", "text": LONG, "score": 0.4}]
    await step.run(ctx)
    (doc,) = ctx.documents
    assert doc["text"] == "short summary" and doc["score"] == 0.9 and doc["metadata"]["sources"] == ["a#0", "b#0"]
    assert "how many patients?" in step.gateway.prompts[0]  # the question goes with the text


async def test_condenses_older_turns_and_keeps_the_last_question() -> None:
    step = CondenseStep({"model": "small", "what": "history"}, Services("they discussed the trial"))
    ctx = ctx_of(("system", "sys"), ("user", LONG), ("assistant", LONG), ("user", "and the dropout rate?"))
    await step.run(ctx)
    roles = [(m.role, m.text()[:40]) for m in ctx.request.messages]
    assert roles == [("system", "sys"), ("user", "Summary of the conversation so far:\nthey"),
                     ("assistant", "Understood."), ("user", "and the dropout rate?")]  # fmt: skip


async def test_a_summary_no_shorter_is_not_used() -> None:
    step = CondenseStep({"model": "small", "what": "user"}, Services(LONG + LONG))
    ctx = ctx_of(("user", LONG))
    await step.run(ctx)
    assert ctx.request.messages[0].text() == LONG
    assert ctx.state["trace.notes"]["condense"]["reason"] == "summary not shorter"


@pytest.mark.parametrize(("options", "error"), [
    ({"model": "nope"}, "not a configured chat model"),
    ({"model": "small", "when": "tokens.inputs > 3"}, "unknown field 'tokens.inputs'"),
    ({"model": "small", "what": "all"}, "what"),
])  # fmt: skip
def test_bad_options(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        CondenseStep(options, Services("x"))
