"""Which price applies to an answer: per (public model, deployment label), resolved once at start-up."""

from __future__ import annotations

from typing import Any

from portico.config.schema import PorticoConfig, Price
from portico.gateway.pricing import cost_usd, resolve_price
from portico.pipeline.context import RequestContext

_STEP_CALLS = "cost.step_calls"  # ctx.state: the model calls steps made besides the answer (see charge)
# ctx.state: set by a step that charged every model call itself (an agent run), so the answer's usage, which then
# sums the whole run, is not priced a second time.
ANSWER_CHARGED = "cost.answer_charged"


class PriceBook:
    def __init__(self, cfg: PorticoConfig) -> None:
        self._prices: dict[tuple[str, str], Price | None] = {}
        for m in cfg.models:
            for d in m.deployments:
                self._prices[(m.name, d.label)] = resolve_price(d.price, d.model, d.provider)

    def price(self, model: str, deployment: str | None) -> Price | None:
        return self._prices.get((model, deployment or ""))

    def cost(self, model: str, deployment: str | None, usage: dict[str, Any] | None) -> float:
        return cost_usd(self.price(model, deployment), usage)

    def request_cost(self, ctx: RequestContext, steps: bool = True) -> float:
        """What a chat request's upstream call cost: priced as the model of its last attempt (a fallback's), plus
        (``steps``) the model calls its steps made on the way, e.g. a query rewrite (see ``charge``)."""
        model = ctx.attempts[-1].model if ctx.attempts else ctx.model
        extra = sum(c["cost_usd"] for c in ctx.state.get(_STEP_CALLS, ())) if steps else 0.0
        if ctx.state.get(ANSWER_CHARGED):
            return extra
        return self.cost(model, ctx.deployment, ctx.usage) + extra

    def charge(self, ctx: RequestContext, step: str, model: str, deployment: str | None,
               usage: dict[str, Any] | None) -> float:  # fmt: skip
        """Book a model call a step made for this request (not its answer): it is priced now and added to the
        request's cost, so spend, budgets and the usage record include it. Returns its cost in USD."""
        usd = self.cost(model, deployment, usage)
        ctx.state.setdefault(_STEP_CALLS, []).append(
            {"step": step, "model": model, "deployment": deployment, "usage": dict(usage or {}), "cost_usd": usd}
        )
        return usd

    def book(self, ctx: RequestContext, step: str, usd: float, **detail: Any) -> None:
        """Add a cost no model call priced (a paid search API behind a tool) to the request's cost."""
        ctx.state.setdefault(_STEP_CALLS, []).append({"step": step, **detail, "cost_usd": usd})
