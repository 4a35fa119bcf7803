"""``route_context`` step: make sure the assembled prompt fits the chosen model's context window.

The prompt's tokens are estimated as ceil(characters / ``chars_per_token``) per message plus 4 tokens of message
framing (the documented estimate; 4 characters a token is OpenAI's rule of thumb for English), and the answer's
budget (the request's ``max_tokens`` or ``reserve_output``) is added. The window of a model is the smallest
``context_window`` of its deployments (a local deployment's ``n_ctx``); a model without one is not checked.

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


class RouteContextOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None  # the model checked when no earlier step set target_model (the application's model)
    larger: list[str] = Field(default_factory=list)  # larger-context models, in order of preference
    on_overflow: Literal["route", "truncate", "route_then_truncate"] = "route_then_truncate"
    reserve_output: int = Field(default=512, ge=0)
    chars_per_token: float = Field(default=4.0, gt=0)


def estimate_tokens(messages: list[Message], chars_per_token: float = 4.0) -> int:
    return sum(math.ceil(len(m.text()) / chars_per_token) + MESSAGE_OVERHEAD for m in messages)


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

    def _need(self, ctx: RequestContext, messages: list[Message]) -> int:
        out = ctx.request.max_completion_tokens or ctx.request.max_tokens or self.options.reserve_output
        return estimate_tokens(messages, self.options.chars_per_token) + out

    def _fits(self, model: str, need: int) -> bool:
        window = self.windows.get(model)
        return window is None or need <= window

    async def run(self, ctx: RequestContext) -> None:
        opts = self.options
        model = ctx.target_model or opts.model or ctx.model
        messages = list(ctx.request.messages)
        need = self._need(ctx, messages)
        note: dict[str, Any] = {"model": model, "tokens_needed": need, "window": self.windows.get(model, 0)}
        if self._fits(model, need):
            ctx.note(self.name, **note, decision="fits")
            return
        if opts.on_overflow in ("route", "route_then_truncate"):
            for bigger in opts.larger:
                if self._fits(bigger, need):
                    ctx.target_model = bigger
                    ctx.note(self.name, **note, decision="route", target_model=bigger)
                    return
            if opts.on_overflow == "route":
                raise InvalidRequest(
                    f"the prompt needs about {need} tokens, more than the context window of '{model}'"
                    + (f" and of {', '.join(opts.larger)}" if opts.larger else ""),
                    param="messages",
                    code="context_length_exceeded",
                )
        kept = self._truncate(ctx, messages, model)
        ctx.request = ctx.request.model_copy(update={"messages": kept})
        ctx.note(
            self.name,
            **note,
            decision="truncate",
            dropped=len(messages) - len(kept),
            tokens_after=self._need(ctx, kept),
        )

    def _truncate(self, ctx: RequestContext, messages: list[Message], model: str) -> list[Message]:
        window = self.windows[model]
        system = [m for m in messages if m.role in ("system", "developer")]
        rest = [m for m in messages if m.role not in ("system", "developer")]
        while len(rest) > 1 and self._need(ctx, system + rest) > window:
            rest.pop(0)  # the oldest turn goes first
        while rest and rest[0].role == "tool":
            rest.pop(0)  # a tool answer without its call is invalid
        if rest and self._need(ctx, system + rest) > window:
            last = rest[-1]
            over = self._need(ctx, system + rest) - window
            text = last.text()
            keep = max(len(text) - math.ceil(over * self.options.chars_per_token), 0)
            rest[-1] = last.model_copy(update={"content": text[len(text) - keep :]})
        return system + rest
