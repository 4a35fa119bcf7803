"""``portico eval run``: the dataset x variants x repeats matrix, scored, persisted cell by cell, summarised and gated.

Resume: a run is identified by its spec and dataset (their hash) plus a start time; an unfinished run with the
same hash is picked up again and only its missing cells run (each cell's row is written when the cell finishes).
A finished run is never reopened: running the same eval again after a code change makes a new run, which is what
a regression gate compares against ``previous``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select

from portico.evaluation.datasets import Item, content_hash, load_jsonl, parse_items
from portico.evaluation.judges import PairwiseJudge
from portico.evaluation.outcome import Outcome
from portico.evaluation.scorers import Scorer, build_scorer
from portico.evaluation.spec import EvalSpec, GateSpec, VariantSpec
from portico.evaluation.statistics import summarise
from portico.storage.db import Database
from portico.storage.evals import (
    create_run,
    dataset_items_of,
    eval_runs,
    finish_run,
    get_run,
    pairs_of,
    previous_run,
    register_dataset,
    results_of,
    save_pair,
    save_result,
)

Progress = Callable[[int, int], None]  # (cells done, cells total)


@dataclass
class RunOutcome:
    run_id: str
    resumed: bool
    summary: dict[str, Any]
    gates: list[dict[str, Any]] = field(default_factory=list)
    ran: int = 0  # cells executed by this invocation (the rest came from an interrupted run)

    @property
    def failed_gates(self) -> list[dict[str, Any]]:
        return [g for g in self.gates if g["status"] == "fail"]


class EvalError(ValueError):
    pass


async def load_dataset(db: Database, spec: EvalSpec, base: Path) -> tuple[str, int, str, list[Item]]:
    """(name, version, hash, items): a file is registered (versioned by content) under its file name."""
    if isinstance(spec.dataset, str):
        path = Path(spec.dataset)
        path = path if path.is_absolute() else base / path
        items = load_jsonl(path)
        digest = content_hash(items)
        version = await register_dataset(db, path.stem, digest, [i.plain() for i in items], str(path))
        return path.stem, version, digest, items
    try:
        version, raw = await dataset_items_of(db, spec.dataset.name, spec.dataset.version)
    except KeyError:
        raise EvalError(f"dataset '{spec.dataset.name}' (version {spec.dataset.version or 'newest'}) "
                        "is not in the database") from None  # fmt: skip
    items = parse_items([orjson.dumps(r).decode() for r in raw], f"dataset {spec.dataset.name} v{version}")
    return spec.dataset.name, version, content_hash(items), items


class EvalRunner:
    def __init__(self, spec: EvalSpec, target: Any, db: Database) -> None:
        self.spec = spec
        self.target = target
        self.db = db
        self.variants = {v.name: v for v in spec.variants}
        for v in spec.variants:
            target.prepare(v)
        try:
            self.scorers: list[Scorer] = [build_scorer(s, embed=target.embed, judge=target.judge) for s in spec.scorers]
        except ValueError as e:
            raise EvalError(str(e)) from None
        self.pairwise = [PairwiseJudge(p, target.judge) for p in spec.pairwise]

    def spec_hash(self, dataset_hash: str) -> str:
        blob = orjson.dumps(self.spec.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS) + dataset_hash.encode()
        return hashlib.sha256(blob).hexdigest()

    async def _open_run(self, name: str, version: int, digest: str, new: bool) -> tuple[str, bool, float]:
        h = self.spec_hash(digest)
        if not new:
            stmt = (select(eval_runs.c.run_id, eval_runs.c.spec, eval_runs.c.created_at)
                    .where((eval_runs.c.name == self.spec.name) & (eval_runs.c.status == "running"))
                    .order_by(eval_runs.c.created_at.desc()))  # fmt: skip
            async with self.db.engine.connect() as conn:
                for run_id, spec, created in (await conn.execute(stmt)).all():
                    if (spec or {}).get("hash") == h:
                        return run_id, True, float(created)
        created = time.time()
        run_id = f"{self.spec.name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(created))}-{h[:6]}"
        await create_run(self.db, {"run_id": run_id, "name": self.spec.name, "created_at": created,
                                   "status": "running", "dataset": name, "dataset_version": version,
                                   "dataset_hash": digest,
                                   "spec": {**self.spec.model_dump(mode="json"), "hash": h}})  # fmt: skip
        return run_id, False, created

    async def _cell(self, run_id: str, item: Item, v: VariantSpec, repeat: int) -> None:
        try:
            out = await asyncio.wait_for(self.target.run(v, item), self.spec.timeout_seconds)
        except TimeoutError:
            out = Outcome(error=f"timed out after {self.spec.timeout_seconds}s",
                          latency_ms=self.spec.timeout_seconds * 1000)  # fmt: skip
        scores: dict[str, float | None] = {}
        details: dict[str, Any] = {}
        for s in self.scorers:
            if out.error:
                scores[s.label] = 0.0  # a failed request fails every scorer that applies
                continue
            try:
                value, info = await s.score(item, out)
            except Exception as e:  # a judge that failed: recorded, not fatal to the run
                value, info = None, {"error": f"{type(e).__name__}: {e}"}
            scores[s.label] = value
            if info:
                details[s.label] = info
        await save_result(self.db, {
            "run_id": run_id, "item_id": item.id, "variant": v.name, "repeat": repeat, "ts": time.time(),
            "output": out.stored(), "scores": scores, "details": details or None, "cost_usd": out.cost_usd,
            "latency_ms": round(out.latency_ms, 3), "tokens": out.tokens, "error": out.error,
        })  # fmt: skip

    async def _pairs(self, run_id: str, items: dict[str, Item], progress: Progress | None) -> None:
        if not self.pairwise:
            return
        texts = {(r["item_id"], r["variant"]): r for r in await results_of(self.db, run_id) if r["repeat"] == 0}
        done = {(p["judge"], p["item_id"], p["a"], p["b"]) for p in await pairs_of(self.db, run_id)}
        sem = asyncio.Semaphore(self.spec.concurrency)

        async def one(j: PairwiseJudge, item: Item) -> None:
            a, b = j.spec.variants
            ra, rb = texts.get((item.id, a)), texts.get((item.id, b))
            if ra is None or rb is None or ra["error"] or rb["error"]:
                return
            async with sem:
                try:
                    winner, details = await j.compare(item, Outcome(text=ra["output"]["text"]),
                                                      Outcome(text=rb["output"]["text"]))  # fmt: skip
                except Exception as e:
                    winner, details = "tie", {"error": f"{type(e).__name__}: {e}", "consistent": False}
            await save_pair(self.db, {"run_id": run_id, "judge": j.label, "item_id": item.id, "a": a, "b": b,
                                      "winner": winner, "details": details})  # fmt: skip

        todo = [(j, it) for j in self.pairwise for it in items.values()
                if (j.label, it.id, j.spec.variants[0], j.spec.variants[1]) not in done]  # fmt: skip
        await asyncio.gather(*(one(j, it) for j, it in todo))

    async def run(self, base: Path, *, new: bool = False, progress: Progress | None = None,
                  max_cells: int | None = None) -> RunOutcome:  # fmt: skip
        """``max_cells`` stops after that many new cells (tests use it to simulate an interruption)."""
        name, version, digest, items = await load_dataset(self.db, self.spec, base)
        run_id, resumed, created = await self._open_run(name, version, digest, new)
        done = {(r["item_id"], r["variant"], r["repeat"]) for r in await results_of(self.db, run_id)}
        cells = [(it, v, r) for it in items for v in self.spec.variants for r in range(self.spec.repeats)]
        todo = [c for c in cells if (c[0].id, c[1].name, c[2]) not in done]
        total, finished = len(cells), len(cells) - len(todo)
        if max_cells is not None:
            todo = todo[:max_cells]
        if progress:
            progress(finished, total)
        sem = asyncio.Semaphore(self.spec.concurrency)

        async def guarded(it: Item, v: VariantSpec, r: int) -> None:
            nonlocal finished
            async with sem:
                await self._cell(run_id, it, v, r)
            finished += 1
            if progress:
                progress(finished, total)

        await asyncio.gather(*(guarded(*c) for c in todo))
        if finished < total:
            return RunOutcome(run_id, resumed, {}, ran=len(todo))
        await self._pairs(run_id, {it.id: it for it in items}, progress)
        summary = summarise(await results_of(self.db, run_id), [v.name for v in self.spec.variants],
                            {s.label: s.pass_at for s in self.scorers}, self.spec.repeats,
                            await pairs_of(self.db, run_id))  # fmt: skip
        summary["dataset"] = {"name": name, "version": version, "hash": digest, "items": len(items)}
        gates = [await self._gate(g, summary, created) for g in self.spec.gates]
        summary["gates"] = gates
        await finish_run(self.db, run_id, summary)
        return RunOutcome(run_id, resumed, summary, gates, ran=len(todo))

    async def _gate(self, g: GateSpec, summary: dict[str, Any], created: float) -> dict[str, Any]:
        value = summary["variants"][g.variant]["scorers"].get(g.scorer, {}).get(g.statistic)
        out: dict[str, Any] = {**g.model_dump(exclude_none=True), "value": value, "status": "pass", "reasons": []}
        if value is None:
            out.update(status="fail", reasons=[f"no {g.statistic} for {g.scorer} on {g.variant} (no items scored)"])
            return out
        if g.min is not None and value < g.min:
            out["status"] = "fail"
            out["reasons"].append(f"{g.statistic} {value:.3f} < min {g.min}")
        if g.baseline is not None:
            base = (await previous_run(self.db, self.spec.name, created) if g.baseline == "previous"
                    else await get_run(self.db, g.baseline))  # fmt: skip
            before = None
            if base is not None and base.get("summary"):
                before = (base["summary"]["variants"].get(g.variant, {}).get("scorers", {}).get(g.scorer, {})
                          .get(g.statistic))  # fmt: skip
            out["baseline_run"] = base["run_id"] if base else None
            out["baseline_value"] = before
            if before is None:
                out["reasons"].append("no baseline value yet: regression not checked")
            elif value < before - g.max_drop:
                out["status"] = "fail"
                out["reasons"].append(f"{g.statistic} {value:.3f} dropped below baseline {before:.3f} - {g.max_drop}")
        return out
