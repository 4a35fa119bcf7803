"""The ``generate`` pipeline step: the model call through the gateway."""

from __future__ import annotations

from portico.gateway.gateway import Gateway
from portico.pipeline.context import TOOL_RUNNER, RequestContext
from portico.pipeline.step import Step


class GenerateStep(Step):
    name = "generate"
    reads = frozenset({"request", "model", "target_model"})
    writes = frozenset({"response", "stream", "deployment", "usage"})

    def __init__(self, gateway: Gateway, model: str | None = None) -> None:
        self.gateway = gateway
        self.model = model  # an application's fixed model; None → the model the client named

    async def run(self, ctx: RequestContext) -> None:
        await generate(self.gateway, ctx, ctx.target_model or self.model or ctx.model)


async def generate(gateway: Gateway, ctx: RequestContext, model: str) -> None:
    """One generation: the model call, or the agent loop when the request brought server-side tools (the
    Responses API's built-ins)."""
    runner = ctx.state.get(TOOL_RUNNER)
    if runner is not None:
        await runner(ctx, model)
    elif ctx.request.stream:
        await gateway.chat_stream(ctx, model)
    else:
        await gateway.chat(ctx, model)
