"""Which price applies to an answer: per (public model, deployment label), resolved once at start-up."""

from __future__ import annotations

from typing import Any

from portico.config.schema import PorticoConfig, Price
from portico.gateway.pricing import cost_usd, resolve_price
from portico.pipeline.context import RequestContext


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

    def request_cost(self, ctx: RequestContext) -> float:
        """What a chat request's upstream call cost: priced as the model of its last attempt (a fallback's)."""
        model = ctx.attempts[-1].model if ctx.attempts else ctx.model
        return self.cost(model, ctx.deployment, ctx.usage)
