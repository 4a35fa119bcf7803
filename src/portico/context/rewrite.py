"""``rewrite`` step: turn the last turn of a conversation into a standalone query (for retrieval and the cache)
with one model call, e.g. "How about Emily Doe?" → "When did Emily Doe last buy something from us?".

The model answers either the query or ``UNRESOLVED: <question for the user>`` when the history does not say what a
reference means; then the step answers the user with that question instead of retrieving on a guess
(``on_unresolved: ask``), or goes on with the last message as it is (``keep``). A first turn needs no call.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.pipeline.context import RequestContext
from portico.pipeline.step import Step
from portico.protocol.chat import ChatCompletionRequest, Message
from portico.protocol.errors import PorticoError

DEFAULT_PROMPT = (
    "You rewrite the user's last message into a standalone search query, using the conversation history to "
    "resolve pronouns and references (who, what, which time). Keep every name, number and constraint. Reply with "
    "the query only, on one line, without quotes or explanations. If the history does not make clear what a "
    "reference means, reply exactly 'UNRESOLVED: ' followed by a short question that asks the user what they mean."
)
UNRESOLVED = "UNRESOLVED:"
REWRITE_CALL = "rewrite.call"  # ctx.state: the rewrite call's model, tokens and cost (the response shows it)


class RewriteOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)
    prompt: str = DEFAULT_PROMPT
    history_turns: int = Field(default=6, ge=1, le=50)  # messages of history the model sees
    max_tokens: int = Field(default=96, ge=8)
    on_unresolved: Literal["ask", "keep"] = "ask"
    on_error: Literal["keep", "fail"] = "keep"  # the rewrite model fails: use the last message as it is
    # skip: a first turn is already standalone (no call). rewrite: rephrase it too, e.g. to search again when a
    # first retrieval was weak (corrective RAG: a loop around rewrite → retrieve).
    first_turn: Literal["skip", "rewrite"] = "skip"


def transcript(messages: list[Message], turns: int) -> tuple[str, str]:
    """(history as "role: text" lines, the last user message)."""
    convo = [m for m in messages if m.role in ("user", "assistant") and m.text().strip()]
    last_user = max((i for i, m in enumerate(convo) if m.role == "user"), default=-1)
    if last_user < 0:
        return "", ""
    history = convo[max(0, last_user - turns) : last_user]
    lines = "\n".join(f"{m.role}: {m.text().strip()}" for m in history)
    return lines, convo[last_user].text().strip()


def parse(answer: str) -> tuple[str | None, str | None]:
    """(query, None) or (None, question for the user)."""
    text = answer.strip().strip('"').strip()
    if text.upper().startswith(UNRESOLVED):
        return None, text[len(UNRESOLVED) :].strip() or "Could you say more precisely what you mean?"
    line = next((x.strip().strip('"').strip() for x in text.splitlines() if x.strip()), "")
    return (line or None), None


class RewriteStep(Step):
    name = "rewrite"
    reads = frozenset({"request", "request_id", "model"})
    writes = frozenset({"query", "response"})

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.options = RewriteOptions.model_validate(options)
        if services.cfg.model(self.options.model) is None:
            raise ValueError(f"unknown model '{self.options.model}'")
        self.gateway = services.gateway
        self.prices = getattr(services, "prices", None)  # PriceBook: the rewrite call is part of the request's cost

    async def run(self, ctx: RequestContext) -> None:
        history, last = transcript(ctx.request.messages, self.options.history_turns)
        o = self.options
        if not history and (o.first_turn == "skip" or not last):
            ctx.note("rewrite", rewritten=False, reason="first turn")
            return
        prompt = f"Conversation so far:\n{history}\n\n" if history else ""
        prompt += f"Last user message: {last}\n\nStandalone query:"
        messages = [Message(role="system", content=o.prompt), Message(role="user", content=prompt)]
        request = ChatCompletionRequest(model=o.model, temperature=0, max_tokens=o.max_tokens, messages=messages)
        sub = RequestContext(request=request, request_id=f"{ctx.request_id}-rewrite", model=o.model)
        try:
            await self.gateway.chat(sub, o.model)
            answer = sub.response["choices"][0]["message"].get("content") or "" if sub.response else ""
        except (PorticoError, KeyError, IndexError) as e:
            if o.on_error == "fail":
                raise
            ctx.note("rewrite", rewritten=False, reason=f"rewrite model failed: {type(e).__name__}")
            return
        usage = sub.usage or {}
        cost = self.prices.charge(ctx, "rewrite", o.model, sub.deployment, usage) if self.prices is not None else 0.0
        query, question = parse(answer)
        ctx.state[REWRITE_CALL] = {"model": o.model, "prompt_tokens": usage.get("prompt_tokens"),
                                   "completion_tokens": usage.get("completion_tokens"),
                                   "cost_usd": round(cost, 8)}  # fmt: skip
        ctx.note("rewrite", model=o.model, deployment=sub.deployment, input_tokens=usage.get("prompt_tokens"),
                 output_tokens=usage.get("completion_tokens"), cost_usd=round(cost, 8))  # fmt: skip
        if question is not None:
            ctx.note("rewrite", rewritten=False, resolved=False, question=question)
            if o.on_unresolved == "ask":
                ctx.short_circuit("rewrite", response=_assistant(ctx.model, question))
            return
        ctx.query = query
        ctx.note("rewrite", rewritten=True, resolved=True, query=query)


def _assistant(model: str, text: str) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "portico": {"rewrite": {"resolved": False}},
    }
