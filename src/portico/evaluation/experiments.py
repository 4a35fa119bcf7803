"""Experiments: split an application's traffic between variant applications, record the variant on each request,
and report each variant's feedback with confidence intervals.

Assignment hashes (experiment, user | key | session) onto [0, 1) and picks the variant whose cumulative share
covers it, so a user keeps its variant while the shares stay; without an id (or ``sticky: none``) the draw is
random. With a bandit, the shares are each variant's probability of being best under Beta(1 + true, 1 + false)
of a boolean feedback metric (Thompson sampling, as shares), floored at ``min_share`` and refreshed in the
background, so traffic moves toward the better variant as feedback arrives.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import logging
import math
import random
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.stats import fisher_exact, mannwhitneyu
from sqlalchemy import select

from portico.config.evaluation import ExperimentConfig
from portico.storage.feedback import feedback, request_meta

if TYPE_CHECKING:
    from portico.config.schema import PorticoConfig
    from portico.gateway.control import Caller
    from portico.pipeline import Pipeline
    from portico.protocol.chat import ChatCompletionRequest
    from portico.storage.db import Database

Z95 = 1.959963984540054
log = logging.getLogger("portico.evaluation")


def bucket(experiment: str, unit: str) -> float:
    """A stable point in [0, 1) for this unit in this experiment (independent across experiments)."""
    digest = hashlib.sha256(f"{experiment}\x1f{unit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def wilson(successes: int, n: int) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + Z95**2 / n
    centre = (p + Z95**2 / (2 * n)) / denom
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def probability_best(counts: list[tuple[int, int]], draws: int = 4000, seed: int = 0) -> list[float]:
    """P(variant i has the highest rate) under independent Beta(1 + true, 1 + false) posteriors."""
    rng = np.random.default_rng(seed)
    samples = np.stack([rng.beta(1 + t, 1 + f, size=draws) for t, f in counts])
    wins = np.bincount(samples.argmax(axis=0), minlength=len(counts))
    return [float(w) / draws for w in wins]


class Experiment:
    def __init__(self, cfg: ExperimentConfig, pipelines: dict[str, Pipeline]) -> None:
        self.cfg = cfg
        self.pipelines = pipelines
        self.set_shares([v.weight for v in cfg.variants])
        self.refreshed = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    def set_shares(self, weights: list[float]) -> None:
        total = sum(weights)
        self.shares = [w / total for w in weights]
        self._edges = list(np.cumsum(self.shares)[:-1])

    def unit(self, req: ChatCompletionRequest, caller: Caller) -> str | None:
        md = req.metadata or {}
        key = caller.key.id if caller.key else None
        session = md.get("session_id") or md.get("session")
        user = req.user or md.get("user_id") or md.get("user")
        order = {"user": (user, key), "key": (key,), "session": (session, user, key), "none": ()}[self.cfg.sticky]
        return next((u for u in order if u), None)

    def choose(self, req: ChatCompletionRequest, caller: Caller, rng: random.Random) -> int:
        unit = self.unit(req, caller)
        point = bucket(self.cfg.name, unit) if unit is not None else rng.random()
        return bisect.bisect_right(self._edges, point)


class ExperimentService:
    def __init__(self, experiments: list[ExperimentConfig], applications: dict[str, Pipeline], db: Database,
                 metric_types: dict[str, str]) -> None:  # fmt: skip
        self.db = db
        self.by_app: dict[str, Experiment] = {}
        self.by_name: dict[str, Experiment] = {}
        self.rng = random.Random()
        for i, e in enumerate(experiments):
            where = f"experiments[{i}] ({e.name})"
            if e.application not in applications:
                raise ValueError(f"{where}: '{e.application}' is not an application")
            for v in e.variants:
                if v.application not in applications:
                    raise ValueError(f"{where}: variant '{v.name}' names unknown application '{v.application}'")
            if e.bandit is not None and metric_types.get(e.bandit.metric) != "boolean":
                raise ValueError(f"{where}: bandit.metric '{e.bandit.metric}' must be a configured boolean metric")
            exp = Experiment(e, {v.name: applications[v.application] for v in e.variants})
            self.by_app[e.application] = self.by_name[e.name] = exp

    @classmethod
    def build(cls, cfg: PorticoConfig, applications: dict[str, Pipeline], db: Database) -> ExperimentService:
        return cls(cfg.experiments, applications, db, {m.name: m.type for m in cfg.metrics})

    @property
    def enabled(self) -> bool:
        return bool(self.by_app)

    def assign(self, application: str | None, req: ChatCompletionRequest, caller: Caller,
               pipeline: Pipeline) -> tuple[Pipeline, str | None, str | None]:  # fmt: skip
        """(pipeline, application, 'experiment:variant') for a request to ``application``."""
        exp = self.by_app.get(application or "")
        if exp is None:
            return pipeline, application, None
        if exp.cfg.bandit is not None:
            self._maybe_refresh(exp)
        v = exp.cfg.variants[exp.choose(req, caller, self.rng)]
        return exp.pipelines[v.name], v.application, f"{exp.cfg.name}:{v.name}"

    # ---- bandit ----
    def _maybe_refresh(self, exp: Experiment) -> None:
        assert exp.cfg.bandit is not None
        due = time.monotonic() - exp.refreshed >= exp.cfg.bandit.refresh_seconds
        if due and (exp._refreshing is None or exp._refreshing.done()):
            exp.refreshed = time.monotonic()
            exp._refreshing = asyncio.ensure_future(self.refresh(exp))

    async def refresh(self, exp: Experiment) -> None:
        """Shares from the feedback so far (off the request path); on a database error the shares stay."""
        assert exp.cfg.bandit is not None
        try:
            counts = await self._boolean_counts(exp.cfg.name, exp.cfg.bandit.metric)
        except Exception:
            log.exception("bandit refresh failed; keeping the current shares", extra={"experiment": exp.cfg.name})
            return
        pbest = probability_best([counts.get(v.name, (0, 0)) for v in exp.cfg.variants])
        floor = exp.cfg.bandit.min_share
        exp.set_shares([floor + (1 - floor * len(pbest)) * p for p in pbest])

    async def _boolean_counts(self, name: str, metric: str) -> dict[str, tuple[int, int]]:
        out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for variant, _metric, _kind, value in await self._judged(name, metric):
            out[variant][0 if value == 1.0 else 1] += 1
        return {k: (v[0], v[1]) for k, v in out.items()}

    async def _judged(self, name: str, metric: str | None = None,
                      since: float | None = None) -> list[tuple[str, str, str, float]]:  # fmt: skip
        """(variant, metric, kind, value) of the numeric feedback on this experiment's requests."""
        in_experiment = request_meta.c.variant.like(f"{name}:%")
        stmt = (select(request_meta.c.variant, feedback.c.metric, feedback.c.kind, feedback.c.value_num)
                .join(request_meta, request_meta.c.request_id == feedback.c.request_id)
                .where(in_experiment & feedback.c.kind.in_(("boolean", "float"))))  # fmt: skip
        if metric is not None:
            stmt = stmt.where(feedback.c.metric == metric)
        if since is not None:
            stmt = stmt.where(feedback.c.ts >= since)
        async with self.db.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [(v.split(":", 1)[1], m, k, float(x)) for v, m, k, x in rows]

    # ---- report ----
    async def report(self, since: float | None = None) -> list[dict[str, Any]]:
        out = []
        for name, exp in self.by_name.items():
            stmt = (select(request_meta.c.variant, request_meta.c.request_id)
                    .where(request_meta.c.variant.like(f"{name}:%")))  # fmt: skip
            if since is not None:
                stmt = stmt.where(request_meta.c.ts >= since)
            requests: dict[str, int] = defaultdict(int)
            async with self.db.engine.connect() as conn:
                for variant, _ in (await conn.execute(stmt)).all():
                    requests[variant.split(":", 1)[1]] += 1
            metrics = await self._metric_rows(name, since)
            variants = [{"name": v.name, "application": v.application, "share": round(s, 4),
                         "requests": requests.get(v.name, 0), "metrics": metrics.get(v.name, {})}
                        for v, s in zip(exp.cfg.variants, exp.shares, strict=True)]  # fmt: skip
            out.append({"name": name, "application": exp.cfg.application, "sticky": exp.cfg.sticky,
                        "bandit": exp.cfg.bandit.model_dump() if exp.cfg.bandit else None, "variants": variants,
                        "comparisons": self._compare(exp, variants)})  # fmt: skip
        return out

    async def _metric_rows(self, name: str, since: float | None) -> dict[str, dict[str, Any]]:
        values: dict[tuple[str, str, str], list[float]] = defaultdict(list)
        for variant, metric, kind, x in await self._judged(name, since=since):
            values[(variant, metric, kind)].append(x)
        out: dict[str, dict[str, Any]] = defaultdict(dict)
        for (variant, metric, kind), xs in values.items():
            n, mean = len(xs), float(np.mean(xs))
            if kind == "boolean":
                ci = wilson(int(sum(xs)), n)
            else:  # normal approximation on the mean of a float metric
                half = Z95 * float(np.std(xs, ddof=1)) / math.sqrt(n) if n > 1 else float("inf")
                ci = (mean - half, mean + half)
            out[variant][metric] = {"kind": kind, "n": n, "mean": round(mean, 6),
                                    "ci": [round(ci[0], 6), round(ci[1], 6)], "values": xs}  # fmt: skip
        return out

    @staticmethod
    def _compare(exp: Experiment, variants: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each variant against the first: Fisher's exact test (boolean) or Mann-Whitney U (float), two-sided."""
        base = variants[0]
        out = []
        for v in variants[1:]:
            for metric, m in v["metrics"].items():
                b = base["metrics"].get(metric)
                if b is None or not m["n"] or not b["n"]:
                    continue
                if m["kind"] == "boolean":
                    ta, tb = int(sum(b["values"])), int(sum(m["values"]))
                    p = fisher_exact([[ta, b["n"] - ta], [tb, m["n"] - tb]]).pvalue
                else:
                    p = mannwhitneyu(b["values"], m["values"], alternative="two-sided").pvalue
                out.append({"metric": metric, "a": base["name"], "b": v["name"],
                            "diff": round(m["mean"] - b["mean"], 6), "p_value": float(p)})  # fmt: skip
        for v in variants:
            for m in v["metrics"].values():
                m.pop("values", None)
        return out
