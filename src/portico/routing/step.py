"""``route_preference`` step: send the request to the weak model unless the strong one is predicted to win.

Reads the query embedding shared by every step (``services.embedder.query(ctx)``, computed once per request),
asks the trained preference router for P(strong answer beats weak answer | prompt), and sets
``ctx.target_model`` to ``strong`` when it is at or above the threshold, else to ``weak``. The threshold is given
directly or looked up for a ``strong_share`` calibrated with ``portico router calibrate``. A model an earlier step
already chose (an intent's route) is kept. A router trained on records with a ``domain`` is told the request's
application as its domain (``domain: none`` leaves it out).

Without a pinned ``version`` the step serves the router's promoted version and follows promotions and rollbacks
(``portico router promote|rollback``): every ``reload_seconds`` it looks at the manifest's modification time and,
when it changed, loads the new version in a thread while the old one keeps serving. With ``retrain_every: N`` the
flywheel runs inside the server: once N new labels of ``feedback_metric`` arrived, a background task trains a
candidate, gates it in shadow and promotes it when better (see flywheel.py; never on the request path).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from portico.pipeline.context import RequestContext
from portico.pipeline.step import Step
from portico.protocol.errors import PorticoError
from portico.routing.preference import PreferenceModel
from portico.routing.store import DEFAULT_ROOT, load, load_threshold
from portico.routing.versions import manifest_path

log = logging.getLogger("portico.routing")


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
    reload_seconds: float = Field(default=2.0, ge=0.0)  # how often to look for a promotion (0: never)
    retrain_every: int | None = Field(default=None, ge=1)  # new labels that trigger a background retrain
    feedback_metric: str | None = None  # the boolean/pairwise metric the flywheel learns from
    retrain_check_seconds: float = Field(default=10.0, gt=0.0)
    retrain_holdout: float = Field(default=0.2, gt=0.0, lt=1.0)  # share of labels the shadow gate scores on
    retrain_min_holdout: int = Field(default=30, ge=1)

    @model_validator(mode="after")
    def _one_threshold(self) -> RoutePreferenceOptions:
        if self.threshold is not None and self.strong_share is not None:
            raise ValueError("give either threshold or strong_share, not both")
        if self.retrain_every is not None and self.feedback_metric is None:
            raise ValueError("retrain_every needs feedback_metric (the metric the router learns from)")
        return self


@dataclass(frozen=True, slots=True)
class Serving:
    """What one request routes with; replaced as a whole when a new version is promoted."""

    model: PreferenceModel
    pair: tuple[str, str]
    threshold: float
    version: int


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
        self.serving = self._build()
        self._manifest = manifest_path(opts.dir, opts.router)
        self._mtime = self._manifest_mtime()
        self._checked = time.monotonic()
        self._reloading: asyncio.Task | None = None
        self._retrainer: Any = None
        if opts.retrain_every is not None:
            from portico.routing.retrain import Retrainer

            self._retrainer = Retrainer(opts, services.db, self.serving.model)
            services.on_close(self._retrainer.close)

    @property
    def model(self) -> PreferenceModel:
        return self.serving.model

    @property
    def threshold(self) -> float:
        return self.serving.threshold

    def _build(self) -> Serving:
        opts = self.options
        model = load(opts.dir, opts.router, opts.version)
        pair = (opts.router_strong or model.strong, opts.router_weak or model.weak)
        model.p_bt(*pair)  # unknown router model names fail at start-up
        version = int(model.info["version"])
        if opts.threshold is not None:
            threshold = opts.threshold
        elif opts.strong_share is not None:
            threshold = load_threshold(opts.dir, opts.router, opts.strong_share, version)
        else:
            threshold = 0.5
        return Serving(model, pair, threshold, version)

    def _manifest_mtime(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._manifest)  # replaced atomically: a new inode on every change
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns

    def _maybe_reload(self) -> None:
        """Start loading the promoted version in a thread when the manifest changed (checked every few seconds)."""
        now = time.monotonic()
        if now - self._checked < self.options.reload_seconds or self._reloading is not None:
            return
        self._checked = now
        mtime = self._manifest_mtime()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        self._reloading = asyncio.ensure_future(self._reload())

    async def _reload(self) -> None:
        try:
            new = await asyncio.to_thread(self._build)
            if new.version != self.serving.version:
                log.info("route_preference: serving router %s/v%d (was v%d)", self.options.router, new.version,
                         self.serving.version)  # fmt: skip
            self.serving = new
        except Exception:  # a broken promotion must not stop routing: keep the version that serves
            log.exception("route_preference: could not load the promoted router; keeping v%d", self.serving.version)
        finally:
            self._reloading = None

    async def run(self, ctx: RequestContext) -> None:
        if ctx.target_model is not None:
            # An earlier step (an intent's route) already chose the model: keep its choice.
            ctx.note(self.name, decision="kept", target_model=ctx.target_model)
            return
        if self.options.version is None and self.options.reload_seconds > 0:
            self._maybe_reload()
        if self._retrainer is not None:
            self._retrainer.poke()
        serving = self.serving  # one snapshot for the whole decision
        emb = await self.embedder.query(ctx)
        dim = serving.model.embedding_dim
        if dim is not None and emb.shape[-1] != dim:
            raise PorticoError(
                f"route_preference: router '{self.options.router}' was trained on {dim}-dimensional embeddings but "
                f"the embedding model gives {emb.shape[-1]}; train it with the application's embedding model"
            )
        domain = ctx.application if self.options.domain == "application" else None
        p = serving.model.p_wins(serving.pair[0], serving.pair[1], emb, ctx.query_text(), domain)
        strong = p >= serving.threshold
        ctx.target_model = self.options.strong if strong else self.options.weak
        ctx.note(
            self.name,
            p_strong=round(p, 6),
            decision="strong" if strong else "weak",
            threshold=serving.threshold,
            target_model=ctx.target_model,
            router=f"{self.options.router}/v{serving.version}",
            router_pair=list(serving.pair),  # the router's names of (strong, weak): what feedback teaches
            domain=domain,
            calibration=serving.model.calibration(domain),  # "shared": the router has no feedback of this domain
        )
