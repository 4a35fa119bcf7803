"""The packaged all-MiniLM-L6-v2 as an ``embed_fn`` for training and calibration outside a running server.

A router must be trained with the embedding model the application uses at serving time (the config's
``type: embedding`` model, e.g. ``local-embed`` with ``provider: local``, which is this same MiniLM).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

EMBEDDER_NAME = "all-MiniLM-L6-v2"


def local_embed_fn(batch_size: int = 64) -> Callable[[list[str]], np.ndarray]:
    from sentence_transformers import SentenceTransformer

    from portico.gateway.providers.local.paths import default_embedder

    model = SentenceTransformer(str(default_embedder()), device="cpu")

    def embed(texts: list[str]) -> np.ndarray:
        vecs = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True)
        return np.asarray(vecs, dtype=np.float32)

    return embed
