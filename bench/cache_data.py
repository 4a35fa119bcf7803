"""Data for bench/cache.py: Quora question pairs split 50/50 into tune and test halves (seeded), and their
all-MiniLM-L6-v2 embeddings cached under /work/cache/cache-bench (or $PORTICO_CACHE_BENCH_DIR) as .npy files."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PORTICO_DATA", str(ROOT.parent / "shared" / "data")))
QQP = DATA / "paraphrase" / "qqp" / "qqp_pairs_60k.jsonl.gz"
EMB_DIR = Path(os.environ.get("PORTICO_CACHE_BENCH_DIR", "/work/cache/cache-bench"))
SEED = 20261201


@dataclass
class Pairs:
    q1: list[str]
    q2: list[str]
    label: np.ndarray  # 1 duplicate, 0 not


def load_split() -> tuple[Pairs, Pairs]:
    """(tune, test): a seeded 50/50 split of the pairs."""
    if not QQP.exists():
        raise SystemExit(f"QQP pairs not found at {QQP} (set PORTICO_DATA)")
    with gzip.open(QQP, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    random.Random(SEED).shuffle(rows)
    half = len(rows) // 2

    def pairs(rs: list[dict]) -> Pairs:
        return Pairs([r["question1"] for r in rs], [r["question2"] for r in rs],
                     np.array([int(r["is_duplicate"]) for r in rs], dtype=np.int8))  # fmt: skip

    return pairs(rows[:half]), pairs(rows[half:])


def minilm():  # type: ignore[no-untyped-def]
    import torch
    from sentence_transformers import SentenceTransformer

    from portico.gateway.providers.local.paths import default_embedder

    torch.set_num_threads(1)
    return SentenceTransformer(str(default_embedder()), device="cpu")


def embed_cached(texts: list[str], name: str, model=None) -> np.ndarray:  # type: ignore[no-untyped-def]
    """L2-normalised float32 embeddings, computed once per text list (keyed by its hash)."""
    digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]
    path = EMB_DIR / f"{name}-{digest}.npy"
    if path.exists():
        return np.load(path)
    model = model or minilm()
    vecs = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                        show_progress_bar=False).astype(np.float32)  # fmt: skip
    EMB_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs)
    return vecs


if __name__ == "__main__":  # precompute every embedding the benchmark needs
    import time

    tune, test = load_split()
    m = minilm()
    for name, texts in (("test_q1", test.q1), ("test_q2", test.q2), ("tune_q1", tune.q1), ("tune_q2", tune.q2)):
        t0 = time.perf_counter()
        v = embed_cached(texts, name, m)
        print(f"{name}: {v.shape} in {time.perf_counter() - t0:.0f} s", flush=True)
