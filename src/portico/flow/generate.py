"""``{use: generate}`` placed by the application (in a branch arm, a loop body): the model call, optionally with
its own ``model:`` (which wins over a router's choice: the arm was chosen for that model).

Run again (a loop that regenerates until a check passes), it first settles the answer it replaces: a stream
nobody read is closed (its upstream connection is released) and a whole answer's usage is booked as a step call,
so the request's cost counts every generation, not only the last.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pydantic import BaseModel, ConfigDict

from portico.gateway import GenerateStep
from portico.gateway.step import generate
from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options

_LAST_MODEL = "generate.model"  # ctx.state: the model the previous generation called


class GenerateOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str | None = None


class PlacedGenerate(GenerateStep):
    def __init__(self, gateway: Any, prices: Any, app_model: str, pinned: str | None) -> None:
        super().__init__(gateway, app_model)
        self.prices = prices
        self.pinned = pinned

    async def run(self, ctx: RequestContext) -> None:
        await self.settle(ctx)
        model = self.pinned or ctx.target_model or self.model or ctx.model
        ctx.state[_LAST_MODEL] = model
        await generate(self.gateway, ctx, model)

    async def settle(self, ctx: RequestContext) -> None:
        if ctx.stream is not None:
            close = getattr(ctx.stream, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
            ctx.stream = None
        elif ctx.response is not None and ctx.usage and self.prices is not None:
            model = ctx.state.get(_LAST_MODEL) or self.model or ctx.model
            self.prices.charge(ctx, "generate", model, ctx.deployment, ctx.usage)
        ctx.response, ctx.usage = None, None


def generate_step(options: dict[str, Any], services: Any, app_model: str) -> PlacedGenerate:
    o = parse_options(GenerateOptions, options)
    if o.model is not None:
        m = services.cfg.model(o.model)
        if m is None or m.type != "chat":
            raise ValueError(f"model: '{o.model}' is not a configured chat model")
    return PlacedGenerate(services.gateway, getattr(services, "prices", None), app_model, o.model)
