"""The ``agent`` pipeline step: the model calls tools on the server, in a loop, until it answers.

Options (in an application's ``steps:``)::

    - use: agent
      tools: [kb_search, lookup_order]   # tool names or tool-source names from the top-level tools: list
      max_steps: 8              # model calls per run
      max_tool_calls: 32        # tool calls per run
      parallel_tool_calls: true # the calls of one turn run concurrently
      time_limit: 120           # seconds for the whole run (model and tool calls)
      budget_usd: 0.05          # summed over every model call (the gateway's prices) and paid tool calls
      budget_tokens: 50000      # prompt + completion tokens over every model call
      tool_choice: auto         # first turn only (auto | required | none | {type: function, function: {name}})
      max_result_chars: 20000   # what the model reads of one tool result
      on_injection: flag        # tool outputs through the injection detector: flag | strip | stop | off

The step takes the generate step's place (an application with an agent step has no generate step) and writes
the answer the same way. A limit ends the run with an assistant message saying which limit, never an error.
Client-supplied function tools that are not server tools are offered too; when the model calls one, the turn
goes back to the client as ordinary ``tool_calls``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.actions.execute import DEFAULT_MAX_RESULT_CHARS
from portico.actions.loop import AgentRun
from portico.actions.screen import ToolOutputScreen
from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options
from portico.pipeline.step import Step
from portico.protocol.errors import InvalidRequest


class AgentOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tools: list[str] = Field(default_factory=list)
    model: str | None = None  # default: the router's choice, else the application's model
    max_steps: int = Field(default=8, ge=1, le=100)
    max_tool_calls: int = Field(default=32, ge=1, le=1000)
    parallel_tool_calls: bool = True
    time_limit: float = Field(default=120.0, gt=0, le=3600)
    budget_usd: float | None = Field(default=None, gt=0)
    budget_tokens: int | None = Field(default=None, ge=1)
    tool_choice: Literal["auto", "required", "none"] | dict[str, Any] | None = None
    max_result_chars: int = Field(default=DEFAULT_MAX_RESULT_CHARS, ge=200, le=2_000_000)
    on_injection: Literal["flag", "strip", "stop", "off"] = "flag"
    injection_threshold: float | None = Field(default=None, ge=0, le=1)
    keepalive_seconds: float = Field(default=5.0, gt=0, le=60)  # SSE comment interval while tools run


class AgentStep(Step):
    name = "agent"
    reads = frozenset({"request", "model", "target_model"})
    writes = frozenset({"response", "stream", "deployment", "usage"})

    def __init__(self, options: AgentOptions, services: Any) -> None:
        self.options = options
        self.toolbox = services.tools
        for i, n in enumerate(options.tools):
            if not self.toolbox.declares(n):
                known = ", ".join(sorted({s.name for s in self.toolbox.sources})) or "none"
                raise ValueError(f"tools[{i}]: unknown tool '{n}' (configured tools: {known})")
        if options.model is not None and services.cfg.model(options.model) is None:
            raise ValueError(f"model: unknown model '{options.model}'")
        self.gateway = services.gateway
        self.prices = services.prices
        self.app_models = {a.name: a.model for a in services.cfg.applications}
        self.screen = None if options.on_injection == "off" else ToolOutputScreen(
            options.on_injection, options.injection_threshold)  # fmt: skip
        self.calls = services.metrics.counter("tool_calls", "Tool calls by agent steps", ("tool", "status"))

    async def run(self, ctx: RequestContext) -> None:
        if (ctx.request.n or 1) > 1:
            raise InvalidRequest("an agent application answers with one choice: n must be 1", param="n")
        model = ctx.target_model or self.options.model or self.app_models.get(ctx.application or "") or ctx.model
        run = AgentRun(self, ctx, model)
        if ctx.request.stream:
            await run.open_stream()  # the first model call starts here: its failure is the request's HTTP error
            ctx.stream = run.stream()
        else:
            await run.complete()


def agent_step(options: dict[str, Any], services: Any) -> AgentStep:
    return AgentStep(parse_options(AgentOptions, options), services)
