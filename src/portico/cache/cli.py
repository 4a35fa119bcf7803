"""``portico cache …``: train the semantic cache's verifier from your own labelled question pairs."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from portico.cache.cacheability_cli import train_cacheability

cache_app = typer.Typer(no_args_is_help=True, help="Caches: train the semantic cache's pair verifier and the "
                        "cacheability classifier.")  # fmt: skip
cache_app.command("train-cacheability")(train_cacheability)
console = Console()


def read_pairs(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """JSON lines with question1/question2/is_duplicate (or a/b/label); .gz is read transparently."""
    opener = gzip.open if path.suffix == ".gz" else open
    q1, q2, y = [], [], []
    with opener(path, "rt", encoding="utf-8") as f:  # type: ignore[operator]
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            try:
                a = row.get("question1", row.get("a"))
                b = row.get("question2", row.get("b"))
                label = row.get("is_duplicate", row.get("label"))
                if not isinstance(a, str) or not isinstance(b, str) or label not in (0, 1, True, False):
                    raise ValueError
            except (AttributeError, ValueError):
                raise typer.BadParameter(f"{path}:{n}: need question1, question2, is_duplicate (0/1)") from None
            q1.append(a)
            q2.append(b)
            y.append(int(label))
    if len(q1) < 50:
        raise typer.BadParameter(f"{path}: {len(q1)} pairs; the verifier needs at least 50")
    return q1, q2, np.array(y, dtype=np.int8)


@cache_app.command("train-verifier")
def train_verifier(
    pairs: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Labelled pairs (.jsonl[.gz])")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the verifier to")] = Path(".portico/verifier"),
    target_precision: Annotated[float, typer.Option(min=0.5, max=0.999)] = 0.95,
    k: Annotated[int, typer.Option(min=1, max=20, help="Candidates per lookup, as the cache will use")] = 4,
    pair_model: Annotated[bool, typer.Option(help="Also train the small network over the two embeddings (on Quora "
                          "pairs it added no measurable recall; try it on your own data)")] = False,
) -> None:
    """Fit the verifier on the packaged MiniLM embeddings; its threshold is set for --target-precision in
    cross-validation. Point a semantic_cache step's `verifier:` at --out."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    from portico.cache.training import fit_verifier
    from portico.gateway.providers.local.paths import default_embedder

    q1, q2, y = read_pairs(pairs)
    model = SentenceTransformer(str(default_embedder()), device="cpu")
    with console.status(f"embedding {len(q1)} pairs"):
        v1 = model.encode(q1, batch_size=64, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
        v2 = model.encode(q2, batch_size=64, normalize_embeddings=True, convert_to_numpy=True).astype(np.float32)
    with console.status("training"):
        verifier = fit_verifier(q1, q2, y, v1, v2, k=k, target_precision=target_precision, pair_model=pair_model,
                                meta={"source": str(pairs), "embedder": "all-MiniLM-L6-v2", "k": k})  # fmt: skip
    verifier.save(out)
    console.print(f"verifier: {verifier.meta['pairs']} candidate pairs, threshold {verifier.threshold:.3f} for "
                  f"precision {target_precision} → {out}")  # fmt: skip
