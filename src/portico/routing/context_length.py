"""``route_context`` step: make sure the assembled prompt fits the chosen model's context window.

Prompt tokens are counted with the model's own tokenizer where Portico holds it: a local llama.cpp deployment
formats the messages with its chat template and tokenizes them (the count it would report itself). Otherwise the
documented estimate applies: ceil(characters / ``chars_per_token``) per message plus 4 tokens of message framing
(4 characters a token is OpenAI's rule of thumb for English; tiktoken is not a dependency and downloads its
encodings at first use, which Portico never does). The answer's budget (the request's ``max_tokens`` or
``reserve_output``) is added. The window of a model is the smallest ``context_window`` of its deployments (a
local deployment's ``n_ctx``); a model without one is not checked. Each model is counted with its own method,
and the note says which (``tokenizer``: ``llama.cpp`` or ``estimate``).

When the prompt does not fit: ``on_overflow: route`` moves to the first of ``larger`` that fits (else fails with
400 ``context_length_exceeded``); ``truncate`` drops the oldest non-system messages (the last user message is
kept, cut from its start if it alone is too long); ``route_then_truncate`` tries routing first. The decision is
noted in the trace.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.pipeline.context import RequestContext
from portico.pipeline.step import Step
from portico.protocol.chat import Message
from portico.protocol.errors import InvalidRequest

MESSAGE_OVERHEAD = 4
ESTIMATE = "estimate"
LLAMA_CPP = "llama.cpp"


class RouteContextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None  # the model checked when no earlier step set target_model (the application's model)
    larger: list[str] = Field(default_factory=list)  # larger-context models, in order of preference
    on_overflow: Literal["route", "truncate", "route_then_truncate"] = "route_then_truncate"
    reserve_output: int = Field(default=512, ge=0)
    chars_per_token: float = Field(default=4.0, gt=0)


def estimate_tokens(messages: list[Message], chars_per_token: float = 4.0) -> int:
    return sum(math.ceil(len(m.text()) / chars_per_token) + MESSAGE_OVERHEAD for m in messages)


def tokenizers(gateway: Any, model: str) -> list[Any]:
    """The backends of ``model`` that count tokens themselves (local llama.cpp deployments), or [] when any of
    its deployments cannot (an HTTP provider): then the estimate applies to the whole model."""
    entry = (getattr(gateway, "models", None) or {}).get(model)
    backends = [h.backend for h in entry.handles] if entry is not None else []
    return backends if backends and all(hasattr(b, "count_tokens") for b in backends) else []


def context_windows(cfg: Any) -> dict[str, int]:
    """Model name → smallest known context window among its deployments (models with none are left out)."""
    out: dict[str, int] = {}
    for m in getattr(cfg, "models", []) or []:
        sizes = [
            d.context_window or getattr(d, "n_ctx", None)
            for d in m.deployments
            if (d.context_window or getattr(d, "n_ctx", None))
        ]
        if sizes and len(sizes) == len(m.deployments):
            out[m.name] = min(sizes)
    return out


class RouteContextStep(Step):
    name = "route_context"
    reads = frozenset({"request", "target_model"})
    writes = frozenset({"request", "target_model"})

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.options = RouteContextOptions.model_validate(options)
        self.windows = context_windows(getattr(services, "cfg", None))
        names = {m.name for m in getattr(getattr(services, "cfg", None), "models", []) or []}
        for m in [self.options.model, *self.options.larger]:
            if m is not None and names and m not in names:
                raise ValueError(f"model '{m}' is not configured")
        gateway = getattr(services, "gateway", None)
        self.tokenizers = {m: tokenizers(gateway, m) for m in names}

    def _count(self, model: str, messages: list[Message]) -> tuple[int, str]:
        """(prompt tokens, method): the model's tokenizer when it has one and it is loaded, else the estimate."""
        backends = self.tokenizers.get(model)
        if backends:
            dicts = [m.model_dump(exclude_none=True) for m in messages]
            counts = [b.count_tokens(dicts) for b in backends]
            if all(c is not None for c in counts):
                return max(counts), LLAMA_CPP  # deployments may differ: the largest count must fit
        return estimate_tokens(messages, self.options.chars_per_token), ESTIMATE

    def _need(self, ctx: RequestContext, model: str, messages: list[Message]) -> tuple[int, str]:
        out = ctx.request.max_completion_tokens or ctx.request.max_tokens or self.options.reserve_output
        tokens, method = self._count(model, messages)
        return tokens + out, method

    async def run(self, ctx: RequestContext) -> None:
        opts = self.options
        model = ctx.target_model or opts.model or ctx.model
        messages = list(ctx.request.messages)
        need, method = self._need(ctx, model, messages)
        window = self.windows.get(model)
        note: dict[str, Any] = {"model": model, "tokens_needed": need, "window": window or 0, "tokenizer": method}
        if window is None or need <= window:
            ctx.note(self.name, **note, decision="fits")
            return
        if opts.on_overflow in ("route", "route_then_truncate"):
            for bigger in opts.larger:
                need_big, method_big = self._need(ctx, bigger, messages)  # counted once: tokenizing is not free
                window_big = self.windows.get(bigger)
                if window_big is None or need_big <= window_big:
                    ctx.target_model = bigger
                    ctx.note(self.name, **note, decision="route", target_model=bigger, tokens_needed_target=need_big,
                             tokenizer_target=method_big)  # fmt: skip
                    return
            if opts.on_overflow == "route":
                raise InvalidRequest(
                    f"the prompt needs about {need} tokens, more than the context window of '{model}'"
                    + (f" and of {', '.join(opts.larger)}" if opts.larger else ""),
                    param="messages",
                    code="context_length_exceeded",
                )
        kept = self._truncate(ctx, messages, model, window)
        ctx.request = ctx.request.model_copy(update={"messages": kept})
        ctx.note(
            self.name,
            **note,
            decision="truncate",
            dropped=len(messages) - len(kept),
            tokens_after=self._need(ctx, model, kept)[0],
        )

    def _truncate(self, ctx: RequestContext, messages: list[Message], model: str, window: int) -> list[Message]:
        def over(msgs: list[Message]) -> int:
            return self._need(ctx, model, msgs)[0] - window

        system = [m for m in messages if m.role in ("system", "developer")]
        rest = [m for m in messages if m.role not in ("system", "developer")]
        while len(rest) > 1 and over(system + rest) > 0:
            rest.pop(0)  # the oldest turn goes first
        while rest and rest[0].role == "tool":
            rest.pop(0)  # a tool answer without its call is invalid
        if not rest:
            return system
        last, text = rest[-1], rest[-1].text()
        # Cut the last message from its start by the characters the excess tokens take (the estimate's ratio, or
        # this text's own characters per token under a tokenizer); a tokenizer may need a few rounds to fit.
        for _ in range(20):
            excess = over(system + rest)
            if excess <= 0 or not text:
                break
            per_token = self.options.chars_per_token
            if self.tokenizers.get(model):
                per_token = len(text) / max(self._count(model, [last.model_copy(update={"content": text})])[0], 1)
            text = text[min(len(text), math.ceil(excess * per_token)) :]
            rest[-1] = last.model_copy(update={"content": text})
        return system + rest
