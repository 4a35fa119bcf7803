"""In-process embeddings through sentence-transformers (default: the packaged all-MiniLM-L6-v2).

Encoding runs on one worker thread so the event loop never blocks. torch gets one intra-op thread: with its
default pool a single query takes ~500 ms whenever another process holds a core (measured on this 2-core
machine kind), with one thread it stays at ~20 ms.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from portico.config.schema import LocalDeployment
from portico.gateway.providers.local.paths import default_embedder
from portico.protocol.embeddings import EmbeddingRequest, embedding_response, shrink
from portico.protocol.errors import InvalidRequest, ServiceUnavailable

log = logging.getLogger("portico.local")


class SentenceEmbeddingBackend:
    kind = "embedding"

    def __init__(self, dep: LocalDeployment) -> None:
        self.dep = dep
        self.path = Path(dep.path) if dep.path else default_embedder()
        self.model_id = dep.model or "all-MiniLM-L6-v2"
        self.label = dep.name or f"local/{self.model_id}"
        self._model: Any = None
        self._onnx: Any = None  # OnnxSentenceEncoder when runtime: onnx applies and passed its check
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portico-embed")
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        return self._model is not None

    @property
    def dimensions(self) -> int:
        return int(self._model.get_sentence_embedding_dimension())

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> None:
        # Never reach for a model hub: the weights are in the installed package.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        transformers.logging.disable_progress_bar()  # progress bars would corrupt the JSON-lines log

        if not self.path.is_dir():
            self.error = f"sentence-transformers model folder not found: {self.path}"
            raise FileNotFoundError(self.error)
        t0 = time.perf_counter()
        torch.set_num_threads(self.dep.n_threads or 1)
        self._model = SentenceTransformer(str(self.path), device="cpu", local_files_only=True)
        if self.dep.precision == "bfloat16":
            self._model = self._model.to(torch.bfloat16)
        elif self.dep.runtime == "onnx" or self.dep.precision == "int8":
            self._onnx = self._onnx_encoder()
        log.info("local embedder loaded", extra={"model": self.label, "runtime": self.runtime,
                                                 "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip

    @property
    def runtime(self) -> str:
        if self._onnx is None:
            return "torch"
        return "onnx-int8" if self._onnx.quantized else "onnx"

    def _onnx_encoder(self) -> Any:
        from portico.gateway.providers.local.onnx_encoder import OnnxSentenceEncoder, OnnxUnsupported

        try:
            return OnnxSentenceEncoder(
                self._model, threads=self.dep.n_threads or 1, quantize=self.dep.precision == "int8"
            )
        except Exception as exc:  # unsupported, or the exporter/ORT failed on this model: torch still serves it
            reason = str(exc) if isinstance(exc, OnnxUnsupported) else repr(exc)[:300]
            log.warning("embedding model stays on torch (float32)", extra={"model": self.label, "reason": reason})
            return None

    def _run(self, texts: list[str]) -> np.ndarray:
        if self._onnx is not None:
            return self._onnx.encode(texts, batch_size=self.dep.batch_size)
        return self._model.encode(
            texts,
            batch_size=self.dep.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, int]:
        model = self._model
        vectors = self._run(texts)
        limit = model.max_seq_length
        lengths = model.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        tokens = sum(min(len(ids), limit) for ids in lengths)
        return vectors, tokens

    async def vectors(self, texts: list[str]) -> np.ndarray:
        """Normalised float32 vectors, for in-process users (the query embedder): no token count, no encoding."""
        if self._model is None:
            raise ServiceUnavailable(f"{self.label} is still loading", headers={"retry-after": "2"})
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._vectors, texts)

    def _vectors(self, texts: list[str]) -> np.ndarray:
        return self._run(texts)

    async def embed(self, req: EmbeddingRequest) -> dict[str, Any]:
        if self._model is None:
            raise ServiceUnavailable(f"{self.label} is still loading", headers={"retry-after": "2"})
        texts = req.texts()
        if texts is None:
            raise InvalidRequest("token-id input is not supported by the local embedding model", param="input")
        vectors, tokens = await asyncio.get_running_loop().run_in_executor(self._pool, self._encode, texts)
        if req.dimensions is not None and req.dimensions > vectors.shape[1]:
            raise InvalidRequest(
                f"dimensions must be at most {vectors.shape[1]} for {self.model_id}", param="dimensions"
            )
        vectors = shrink(vectors, req.dimensions)
        return embedding_response(
            vectors, model=self.model_id, prompt_tokens=tokens, encoding_format=req.encoding_format
        )
