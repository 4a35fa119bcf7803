"""The optional LLM intent classifier of ``route_intent``: one model call through the gateway names the intent.

The model sees the intents (name, description, a few examples) in the system prompt and the query as the user
message, and must answer with one intent name and nothing else. Parsing is strict: the answer, stripped of white
space, quotes and a final period, must equal a name (case aside); anything else — ``unclear``, an unknown name,
a sentence around the name, a failed call — counts as no answer, which the step treats as low confidence. The
call is priced into the request's cost (``PriceBook.charge``) and noted in the trace like any step's model call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest, Message
from portico.protocol.errors import PorticoError

UNCLEAR = "unclear"
DEFAULT_PROMPT = (
    "You classify what a user wants. The possible intents are:\n{intents}\n\n"
    "Reply with exactly one intent name from the list, written as above, and nothing else. "
    f"If none of them fits or the message is too unclear to tell, reply {UNCLEAR}."
)


class LlmClassifierOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1)  # a Portico chat model
    prompt: str = DEFAULT_PROMPT  # system prompt; "{intents}" becomes one "- name: description" line per intent
    examples: int = Field(default=3, ge=0, le=20)  # examples shown per intent
    max_tokens: int = Field(default=16, ge=1, le=512)  # an intent name is short; a long answer is garbled anyway


@dataclass(frozen=True, slots=True)
class LlmVerdict:
    intent: int | None  # index of the named intent; None: no valid name
    note: dict[str, Any] = field(default_factory=dict)


def intent_lines(intents: list[Any], examples: int) -> str:
    lines = []
    for i in intents:
        line = f"- {i.name}" + (f": {i.description}" if i.description else "")
        shown = i.examples[:examples]
        if shown:
            line += " (e.g. " + "; ".join(f'"{e}"' for e in shown) + ")"
        lines.append(line)
    return "\n".join(lines)


def parse_intent(answer: str, names: list[str]) -> int | None:
    """The index of the intent the answer names, or None (unclear, unknown or more than a name)."""
    text = answer.strip().strip("\"'`").strip().removesuffix(".").strip()
    lowered = text.lower()
    for i, name in enumerate(names):
        if lowered == name.lower():
            return i
    return None


class LlmClassifier:
    def __init__(self, options: LlmClassifierOptions, intents: list[Any], gateway: Any, prices: Any) -> None:
        self.options = options
        self.names = [i.name for i in intents]
        self.system = options.prompt.replace("{intents}", intent_lines(intents, options.examples))
        self.gateway = gateway
        self.prices = prices

    async def classify(self, ctx: RequestContext, step: str) -> LlmVerdict:
        o = self.options
        messages = [Message(role="system", content=self.system), Message(role="user", content=ctx.query_text())]
        request = ChatCompletionRequest(model=o.model, temperature=0, max_tokens=o.max_tokens, messages=messages)
        sub = RequestContext(request=request, request_id=f"{ctx.request_id}-{step}", model=o.model)
        note: dict[str, Any] = {"llm_model": o.model}
        try:
            await self.gateway.chat(sub, o.model)
            answer = (sub.response["choices"][0]["message"].get("content") or "") if sub.response else ""
        except (PorticoError, KeyError, IndexError) as e:
            # A failed classifier call is no answer: the step asks for clarification rather than failing the request.
            return LlmVerdict(None, {**note, "llm_error": f"{type(e).__name__}: {e}"[:200]})
        usage = sub.usage or {}
        cost = self.prices.charge(ctx, step, o.model, sub.deployment, usage) if self.prices is not None else 0.0
        note.update(
            llm_deployment=sub.deployment,
            llm_answer=answer[:200],
            llm_input_tokens=usage.get("prompt_tokens"),
            llm_output_tokens=usage.get("completion_tokens"),
            llm_cost_usd=round(cost, 8),
        )
        return LlmVerdict(parse_intent(answer, self.names), note)
