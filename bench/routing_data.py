"""Data for bench/routing.py: RouteLLM's golden-labelled MMLU/GSM8K and PRD's human pairwise ratings, with the
MiniLM embeddings cached under /work/cache/routing (or $PORTICO_ROUTING_CACHE) as .npy files keyed by dataset."""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PORTICO_DATA", str(ROOT.parent / "shared" / "data"))) / "preference"
CACHE = Path(os.environ.get("PORTICO_ROUTING_CACHE", "/work/cache/routing"))
WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"

csv.field_size_limit(1 << 30)


@dataclass
class Golden:
    """Prompts with whether the weak and the strong model answered correctly."""

    name: str
    prompts: list[str]
    subjects: list[str]
    weak_ok: np.ndarray
    strong_ok: np.ndarray
    dropped: int  # contaminated prompts removed


def _contaminated(name: str) -> set[str]:
    path = DATA / "routellm" / f"{name}_contaminated_prompts.jsonl"
    with path.open(encoding="utf-8") as f:
        return {json.loads(line)["eval_prompt"].strip() for line in f if line.strip()}


def load_golden(name: str) -> Golden:
    path = DATA / "routellm" / f"{name}_responses.csv.gz"
    with gzip.open(path, "rb") as raw:
        rows = list(csv.DictReader(io.TextIOWrapper(raw, encoding="utf-8")))
    bad = _contaminated(name)
    kept = [r for r in rows if r["prompt"].strip() not in bad]
    return Golden(
        name=name,
        prompts=[r["prompt"] for r in kept],
        subjects=[r.get("subject") or name for r in kept],
        weak_ok=np.asarray([r[WEAK] == "True" for r in kept], dtype=np.float64),
        strong_ok=np.asarray([r[STRONG] == "True" for r in kept], dtype=np.float64),
        dropped=len(rows) - len(kept),
    )


def load_human() -> list[dict]:
    path = DATA / "prd_vicuna80_human" / "human_pairwise_ratings.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def encoder():
    import torch
    from sentence_transformers import SentenceTransformer

    from portico.gateway.providers.local.paths import default_embedder

    torch.set_num_threads(1)
    return SentenceTransformer(str(default_embedder()), device="cpu")


def embed_cached(key: str, texts: list[str], model_box: list) -> np.ndarray:
    """L2-normalised MiniLM embeddings of ``texts``, cached in CACHE/<key>-<hash of the texts>.npy."""
    digest = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:16]
    path = CACHE / f"{key}-{digest}.npy"
    if path.exists():
        return np.load(path)
    if not model_box:
        model_box.append(encoder())
    t0 = time.perf_counter()
    vecs = model_box[0].encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    print(f"embedded {len(texts)} {key} texts in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, vecs.astype(np.float32))
    return vecs.astype(np.float32)
