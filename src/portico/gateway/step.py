"""The ``generate`` pipeline step: the model call through the gateway."""

from __future__ import annotations

from portico.gateway.gateway import Gateway
from portico.pipeline.context import RequestContext
from portico.pipeline.step import Step


class GenerateStep(Step):
    name = "generate"
    reads = frozenset({"request", "model", "target_model"})
    writes = frozenset({"response", "stream", "deployment", "usage"})

    def __init__(self, gateway: Gateway, model: str | None = None) -> None:
        self.gateway = gateway
        self.model = model  # an application's fixed model; None → the model the client named

    async def run(self, ctx: RequestContext) -> None:
        model = ctx.target_model or self.model or ctx.model
        if ctx.request.stream:
            await self.gateway.chat_stream(ctx, model)
        else:
            await self.gateway.chat(ctx, model)
