"""``condense`` step: "summarize small, then send big". A cheap model condenses what makes a prompt long, so the
expensive model answers from fewer tokens::

    - use: condense
      model: small-model            # the cheap model that condenses
      when: 'tokens.input > 6000'   # a condition (CEL, see portico.flow.conditions); omitted: always
      target_tokens: 500            # the summary's budget (its max_tokens)
      what: retrieved               # retrieved: the retrieved chunks (before pack), as one condensed chunk
                                    # user: the last user message (a long pasted document)
                                    # history: the turns before the last user message, as one summary turn

The summary keeps what the question needs: the question goes with every condense call. The span notes the
tokens before and after (estimates at 4 characters a token, the same for both), the condense call's tokens and
cost, and, from its closer at the end of the request, the answer's cost, so one trace shows both calls' costs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.flow.conditions import Condition
from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options
from portico.pipeline.step import Step
from portico.protocol.chat import ChatCompletionRequest, Message
from portico.routing.context_length import estimate_tokens

PROMPT = (
    "Condense the text below for someone who must answer this question: {question}\n"
    "Keep every fact, number, name and finding that bears on the question; drop everything else. "
    "Write at most {words} words of plain prose. Reply with the condensed text only.\n\nText:\n{text}"
)


class CondenseOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    when: str | None = None
    target_tokens: int = Field(default=500, ge=16, le=8192)
    what: Literal["retrieved", "user", "history"] = "retrieved"
    prompt: str = PROMPT  # {question}, {words} and {text} are filled in


def _tokens(text: str) -> int:
    return estimate_tokens([Message(role="user", content=text)])


class CondenseStep(Step):
    name = "condense"
    reads = frozenset({"request", "query"})
    writes = frozenset({"request", "documents"})

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.o = o = parse_options(CondenseOptions, options)
        m = services.cfg.model(o.model)
        if m is None or m.type != "chat":
            raise ValueError(f"model: '{o.model}' is not a configured chat model")
        self.when = Condition(o.when) if o.when is not None else None
        if o.what == "retrieved":
            self.reads = frozenset({"request", "query", "documents"})  # type: ignore[misc]
            self.writes = frozenset({"documents"})  # type: ignore[misc]
        else:
            self.writes = frozenset({"request"})  # type: ignore[misc]
        self.gateway = services.gateway
        self.prices = getattr(services, "prices", None)
        self.closer = CondenseCost(self.prices)

    async def run(self, ctx: RequestContext) -> None:
        if self.when is not None:
            value, error = self.when.evaluate(ctx)
            if not value:
                ctx.note(self.name, condensed=False, condition=self.when.text, **({"error": error} if error else {}))
                return
        text = self.source(ctx)
        if not text.strip():
            ctx.note(self.name, condensed=False, reason=f"nothing to condense ({self.o.what})")
            return
        summary, usage, deployment = await self.condense(ctx, text)
        before, after = _tokens(text), _tokens(summary)
        if after >= before:  # a summary no shorter than its source saves nothing: keep the source
            ctx.note(self.name, condensed=False, reason="summary not shorter", tokens_before=before,
                     tokens_after=after)  # fmt: skip
            return
        self.replace(ctx, summary)
        ctx.note(self.name, condensed=True, what=self.o.what, model=self.o.model, deployment=deployment,
                 tokens_before=before, tokens_after=after,
                 condense_input_tokens=usage.get("prompt_tokens"),
                 condense_output_tokens=usage.get("completion_tokens"),
                 condense_cost_usd=round(self.charge(ctx, deployment, usage), 8))  # fmt: skip

    def source(self, ctx: RequestContext) -> str:
        msgs = ctx.request.messages
        if self.o.what == "retrieved":
            return "\n\n".join(str(d.get("text") or "") for d in ctx.documents or [])
        last = max((i for i, m in enumerate(msgs) if m.role == "user"), default=-1)
        if self.o.what == "user":
            return msgs[last].text() if last >= 0 else ""
        return "\n".join(f"{m.role}: {m.text()}" for m in msgs[:last] if m.role in ("user", "assistant"))

    def replace(self, ctx: RequestContext, summary: str) -> None:
        msgs = list(ctx.request.messages)
        last = max((i for i, m in enumerate(msgs) if m.role == "user"), default=-1)
        if self.o.what == "retrieved":
            docs = ctx.documents or []
            ctx.documents = [{"id": "condensed", "document_id": "condensed", "text": summary,
                              "score": max((float(d.get("score") or 0.0) for d in docs), default=0.0),
                              "metadata": {"sources": [d.get("id") for d in docs]}}]  # fmt: skip
            return
        if self.o.what == "user":
            msgs[last] = Message(role="user", content=summary)
        else:
            kept = [m for m in msgs[:last] if m.role not in ("user", "assistant")]  # system prompts stay
            msgs = [*kept, Message(role="user", content=f"Summary of the conversation so far:\n{summary}"),
                    Message(role="assistant", content="Understood."), *msgs[last:]]  # fmt: skip
        ctx.request = ctx.request.model_copy(update={"messages": msgs})

    async def condense(self, ctx: RequestContext, text: str) -> tuple[str, dict[str, Any], str | None]:
        o = self.o
        question = ctx.query_text() if o.what != "user" else "(the question is in the text itself; keep it whole)"
        prompt = o.prompt.format(question=question, words=max(8, o.target_tokens * 3 // 4), text=text)
        req = ChatCompletionRequest(model=o.model, temperature=0, max_tokens=o.target_tokens,
                                    messages=[Message(role="user", content=prompt)])  # fmt: skip
        sub = RequestContext(request=req, request_id=f"{ctx.request_id}-condense", model=o.model)
        await self.gateway.chat(sub, o.model)
        ctx.attempts.extend(sub.attempts)  # the condense call shows in the trace beside the answer's
        choices = (sub.response or {}).get("choices") or [{}]
        return (choices[0].get("message") or {}).get("content") or "", sub.usage or {}, sub.deployment

    def charge(self, ctx: RequestContext, deployment: str | None, usage: dict[str, Any]) -> float:
        if self.prices is None:
            return 0.0
        return self.prices.charge(ctx, self.name, self.o.model, deployment, usage)


class CondenseCost(Step):
    """Runs last: notes the answer's own cost on the condense span (a stream's usage is not known yet)."""

    name = "condense_cost"
    reads = frozenset({"request"})

    def __init__(self, prices: Any) -> None:
        self.prices = prices

    async def run(self, ctx: RequestContext) -> None:
        note = ctx.state.get("trace.notes", {}).get("condense", {})
        if note.get("condensed") and ctx.usage and self.prices is not None:
            ctx.note("condense", answer_input_tokens=ctx.usage.get("prompt_tokens"),
                     answer_cost_usd=round(self.prices.request_cost(ctx, steps=False), 8))  # fmt: skip
