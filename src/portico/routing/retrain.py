"""One retrain from the database (the CLI's ``train --from-feedback``), and the server's scheduled retrains.

``retrain`` reads the labels (feedback_labels), runs one turn of the flywheel (flywheel.run_cycle: train, shadow
gate, save, promote when better) in a thread, and records in the manifest how many feedback rows it had seen, so
the schedule counts *new* labels from there. A lock file next to the manifest keeps two processes (server
workers, a CLI run) from training the same router at once; the one that finds it taken skips.

``Retrainer`` is the schedule inside ``portico serve``: the route_preference step pokes it on each request (a
time comparison); at most every ``retrain_check_seconds`` it counts the metric's feedback rows in a background
task and retrains once ``retrain_every`` new ones arrived. The request that poked it never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select

from portico.routing import versions
from portico.routing.feedback_labels import collect
from portico.routing.flywheel import Cycle, Settings, run_cycle
from portico.storage.db import Database
from portico.storage.feedback import feedback

log = logging.getLogger("portico.routing")
EmbedFn = Callable[[list[str]], np.ndarray]


async def feedback_rows(db: Database, metric: str) -> int:
    stmt = select(func.count()).select_from(feedback).where(
        (feedback.c.metric == metric) & feedback.c.kind.in_(("boolean", "pairwise")))  # fmt: skip
    async with db.engine.connect() as conn:
        return int((await conn.execute(stmt)).scalar_one())


def labels_at_last_train(root: str | Path, name: str) -> int:
    m = versions.read(root, name) or {}
    return int(m.get("flywheel", {}).get("feedback_rows", 0))


class Busy(RuntimeError):
    """Another process is training this router right now."""


def _cycle_locked(root: str | Path, name: str, fn: Callable[[], Cycle]) -> Cycle:
    base = Path(root) / name
    base.mkdir(parents=True, exist_ok=True)
    with (base / ".train.lock").open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(f"router '{name}' is being trained by another process") from None
        return fn()


async def retrain(db: Database, *, root: str | Path, name: str, metric: str, strong: str, weak: str,
                  embed_fn: EmbedFn, settings: Settings | None = None, promote: bool = True,
                  application: str | None = None,
                  embedder: str | None = None) -> tuple[Cycle, dict[str, int]]:  # fmt: skip
    """(the cycle, label counts by kind)."""
    rows = await feedback_rows(db, metric)
    labels = await collect(db, metric=metric, router=name, application=application)
    kinds = {"boolean": sum(not lab.pairwise for lab in labels), "pairwise": sum(lab.pairwise for lab in labels)}

    def turn() -> Cycle:
        return run_cycle(labels, root=root, name=name, embed_fn=embed_fn, strong=strong, weak=weak,
                         settings=settings, promote=promote, embedder=embedder)  # fmt: skip

    cycle = await asyncio.to_thread(_cycle_locked, root, name, turn)

    def mark(m: dict[str, Any]) -> None:
        m.setdefault("flywheel", {}).update(feedback_rows=rows, ts=time.time(), labels=kinds,
                                            promoted=cycle.promoted, candidate=cycle.candidate)  # fmt: skip

    versions.update(root, name, mark)
    return cycle, kinds


class Retrainer:
    def __init__(self, opts: Any, db: Database, model: Any) -> None:
        self.opts = opts
        self.db = db
        self.pair = (opts.router_strong or model.strong, opts.router_weak or model.weak)
        self.checked = 0.0
        self.task: asyncio.Task | None = None
        self._embed: EmbedFn | None = None

    def poke(self) -> None:
        now = time.monotonic()
        if (self.task is not None and not self.task.done()) or now - self.checked < self.opts.retrain_check_seconds:
            return
        self.checked = now
        self.task = asyncio.ensure_future(self.check())

    def embed(self, texts: list[str]) -> np.ndarray:
        if self._embed is None:  # loaded on the first retrain, in the training thread
            from portico.routing.local_embed import local_embed_fn

            self._embed = local_embed_fn()
        return self._embed(texts)

    async def check(self) -> Cycle | None:
        o = self.opts
        try:
            new = await feedback_rows(self.db, o.feedback_metric) - labels_at_last_train(o.dir, o.router)
            if new < o.retrain_every:
                return None
            from portico.routing.local_embed import EMBEDDER_NAME

            settings = Settings(holdout=o.retrain_holdout, min_holdout=o.retrain_min_holdout)
            cycle, _ = await retrain(self.db, root=o.dir, name=o.router, metric=o.feedback_metric,
                                     strong=self.pair[0], weak=self.pair[1], embed_fn=self.embed,
                                     settings=settings, embedder=EMBEDDER_NAME)  # fmt: skip
            log.info("router %s: scheduled retrain after %d new labels: %s", o.router, new, cycle.reason)
            return cycle
        except Busy:
            return None
        except Exception:  # a failed retrain leaves the serving router as it is
            log.exception("router %s: scheduled retrain failed", o.router)
            return None

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
