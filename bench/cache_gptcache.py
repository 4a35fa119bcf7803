"""GPTCache on the QQP protocol, run by bench/cache.py in its own process (its native libraries stay apart from ours).

Prints progress lines, then one JSON line: the chosen threshold, the test outcome and lookup latencies.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_data import Pairs, embed_cached, load_split, minilm
from cache_eval import Outcome, score

TARGET = 0.95


def gptcache_run(tune: Pairs, test: Pairs, emb: dict[str, tuple], model) -> dict:  # type: ignore[no-untyped-def]
    """GPTCache 0.1.x: sqlite + faiss, SearchDistanceEvaluation, the same MiniLM embeddings, max_size 200k."""
    from gptcache import Cache, Config
    from gptcache.adapter.api import get, put
    from gptcache.manager import CacheBase, VectorBase, get_data_manager
    from gptcache.processor.pre import get_prompt
    from gptcache.similarity_evaluation.distance import SearchDistanceEvaluation

    lookup = {}
    for texts in emb.values():
        lookup.update(zip(texts[0], texts[1], strict=True))  # type: ignore[arg-type]

    def build(pairs: Pairs, threshold: float, tmp: str, embed=None):  # type: ignore[no-untyped-def]
        cache = Cache()
        vectors = VectorBase("faiss", dimension=384, top_k=1, index_path=f"{tmp}/faiss.index")
        dm = get_data_manager(CacheBase("sqlite", sql_url=f"sqlite:///{tmp}/g.db"), vectors, max_size=200_000)
        cache.init(pre_embedding_func=get_prompt, embedding_func=embed or (lambda x, **_: lookup[x]),
                   data_manager=dm, similarity_evaluation=SearchDistanceEvaluation(),
                   config=Config(similarity_threshold=threshold))  # fmt: skip
        texts = list(dict.fromkeys(pairs.q1))
        for k, t in enumerate(texts):
            put(t, str(k), cache_obj=cache)
        return cache, texts

    def run(pairs: Pairs, threshold: float) -> tuple[Outcome, list[float]]:
        with tempfile.TemporaryDirectory() as tmp:
            cache, texts = build(pairs, threshold, tmp)
            served, times = [], []
            for q in pairs.q2:
                t0 = time.perf_counter()
                ans = get(q, cache_obj=cache)
                times.append((time.perf_counter() - t0) * 1000)
                served.append(int(ans) if ans is not None else None)
            return score("GPTCache", pairs, served, texts), times

    # Tune: sweep the threshold on the tune half (a subsample keeps the sweep short), keep the lowest that
    # reaches the target precision.
    sub = Pairs(tune.q1[:6000], tune.q2[:6000], tune.label[:6000])
    chosen = 0.99
    for th in (0.95, 0.96, 0.97, 0.975, 0.98, 0.985, 0.99):
        out, _ = run(sub, th)
        print(f"  gptcache tune threshold {th}: precision {out.precision:.3f} recall {out.recall:.3f}", flush=True)
        if out.precision >= TARGET:
            chosen = th
            break
    test_out, times = run(test, chosen)
    # Live latency: GPTCache embedding each lookup itself with the same model, 300 lookups at the test size.
    with tempfile.TemporaryDirectory() as tmp:
        cache, _ = build(test, chosen, tmp)
        cache.embedding_func = lambda x, **_: model.encode([x], normalize_embeddings=True)[0]
        live = []
        for q in test.q2[:300]:
            t0 = time.perf_counter()
            get(q, cache_obj=cache)
            live.append((time.perf_counter() - t0) * 1000)
    return {"threshold": chosen, "outcome": test_out, "search_ms": times, "live_ms": live}


def main() -> None:
    tune, test = load_split()
    v = {n: embed_cached(t, n) for n, t in (("test_q1", test.q1), ("test_q2", test.q2),
                                         ("tune_q1", tune.q1), ("tune_q2", tune.q2))}  # fmt: skip
    emb = {"tune": (tune.q1 + tune.q2, np.concatenate([v["tune_q1"], v["tune_q2"]])),
           "test": (test.q1 + test.q2, np.concatenate([v["test_q1"], v["test_q2"]]))}  # fmt: skip
    g = gptcache_run(tune, test, emb, minilm())
    out: Outcome = g["outcome"]
    print(json.dumps({**g, "outcome": asdict(out)}))


if __name__ == "__main__":
    main()
