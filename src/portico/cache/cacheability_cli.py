"""``portico cache train-cacheability``: retrain the cacheability classifier with an operator's own examples."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()


def train_cacheability(
    data: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help='JSON lines {"text": …, "label": 1 (do not cache) | 0}')
    ],
    out: Annotated[Path, typer.Option("--out", help="Model file to write (.npz)")] = Path(".portico/cacheability.npz"),
    builtin: Annotated[bool, typer.Option(help="Add the packaged examples to yours")] = True,
    folds: Annotated[int, typer.Option(min=2, max=20, help="Cross-validation folds for C and the threshold")] = 5,
) -> None:
    """Fit the classifier that decides, with the rules, which queries are never cached. Point `cache:` (or an
    application's `use: cache` step) at it with `skip_classifier: OUT`."""
    from portico.cache.cacheability_model import TRAIN_DATA, read_examples, train

    try:
        texts, labels = read_examples(data)
        sources = [str(data)]
        if builtin and data.resolve() != TRAIN_DATA:
            more_texts, more_labels = read_examples(TRAIN_DATA)
            texts, labels, sources = texts + more_texts, labels + more_labels, [*sources, "packaged"]
        with console.status(f"training on {len(texts)} examples"):
            model = train(texts, labels, folds=folds, meta={"sources": sources})
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    m = model.meta
    console.print(f"cacheability: {m['examples']} examples ({m['positives']} do-not-cache), C={m['C']}, "
                  f"cross-validated F1 {m['cv_f1']:.3f} at threshold {model.threshold:.3f} → {out}")  # fmt: skip
