"""``route_preference`` step: send the request to the weak model unless the strong one is predicted to win.

Reads the query embedding shared by every step (``services.embedder.query(ctx)``, computed once per request),
asks the trained preference router for P(strong answer beats weak answer | prompt), and sets
``ctx.target_model`` to ``strong`` when it is at or above the threshold, else to ``weak``. The threshold is given
directly or looked up for a ``strong_share`` calibrated with ``portico router calibrate``. A model an earlier step
already chose (an intent's route) is kept. A router trained on records with a ``domain`` is told the request's
application as its domain (``domain: none`` leaves it out).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from portico.pipeline.context import RequestContext
from portico.pipeline.step import Step
from portico.protocol.errors import PorticoError
from portico.routing.store import DEFAULT_ROOT, load, load_threshold


class RoutePreferenceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strong: str  # Portico model (or deployment name) for prompts that need it
    weak: str
    router: str  # name of a trained router under ``dir``
    dir: str = DEFAULT_ROOT
    version: int | None = None  # None: the latest version
    threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    strong_share: float | None = Field(default=None, ge=0.0, le=1.0)
    # The router's own names for the pair, when its training data used other names than the config's models.
    router_strong: str | None = None
    router_weak: str | None = None
    domain: Literal["application", "none"] = "application"

    @model_validator(mode="after")
    def _one_threshold(self) -> RoutePreferenceOptions:
        if self.threshold is not None and self.strong_share is not None:
            raise ValueError("give either threshold or strong_share, not both")
        return self


class RoutePreferenceStep(Step):
    name = "route_preference"
    reads = frozenset({"request", "query"})
    writes = frozenset({"target_model"})

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.options = opts = RoutePreferenceOptions.model_validate(options)
        self.embedder = services.embedder
        self.embedder.require("route_preference")
        models = getattr(getattr(services, "gateway", None), "models", None)
        if models is not None:
            for m in (opts.strong, opts.weak):
                if m not in models:
                    raise ValueError(f"model '{m}' is not configured")
        self.model = load(opts.dir, opts.router, opts.version)
        self.pair = (opts.router_strong or self.model.strong, opts.router_weak or self.model.weak)
        self.model.p_bt(*self.pair)  # unknown router model names fail at start-up
        if opts.threshold is not None:
            self.threshold = opts.threshold
        elif opts.strong_share is not None:
            self.threshold = load_threshold(opts.dir, opts.router, opts.strong_share, self.model.info["version"])
        else:
            self.threshold = 0.5

    async def run(self, ctx: RequestContext) -> None:
        if ctx.target_model is not None:
            # An earlier step (an intent's route) already chose the model: keep its choice.
            ctx.note(self.name, decision="kept", target_model=ctx.target_model)
            return
        emb = await self.embedder.query(ctx)
        dim = self.model.embedding_dim
        if dim is not None and emb.shape[-1] != dim:
            raise PorticoError(
                f"route_preference: router '{self.options.router}' was trained on {dim}-dimensional embeddings but "
                f"the embedding model gives {emb.shape[-1]}; train it with the application's embedding model"
            )
        domain = ctx.application if self.options.domain == "application" else None
        p = self.model.p_wins(self.pair[0], self.pair[1], emb, ctx.query_text(), domain)
        strong = p >= self.threshold
        ctx.target_model = self.options.strong if strong else self.options.weak
        ctx.note(
            self.name,
            p_strong=round(p, 6),
            decision="strong" if strong else "weak",
            threshold=self.threshold,
            target_model=ctx.target_model,
            router=f"{self.options.router}/v{self.model.info['version']}",
            domain=domain,
            calibration=self.model.calibration(domain),  # "shared": the router has no feedback of this domain
        )
