"""Wire types for ``/v1/embeddings``."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    dimensions: int | None = Field(default=None, ge=1)
    encoding_format: Literal["float", "base64"] | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _non_empty(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("input must not be an empty list")
        if isinstance(v, str) and not v:
            raise ValueError("input must not be an empty string")
        if isinstance(v, list) and any(isinstance(x, str) and not x for x in v):
            raise ValueError("input must not contain empty strings")
        return v

    def texts(self) -> list[str] | None:
        """The inputs as strings, or None when the client sent token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if all(isinstance(x, str) for x in self.input):
            return list(self.input)  # type: ignore[arg-type]
        return None

    def upstream_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


def shrink(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """Matryoshka-style: keep the first ``dimensions`` components and re-normalise to unit length."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    cut = vectors[:, :dimensions]
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return cut / norms


def encode_vector(vec: np.ndarray, encoding_format: str | None) -> list[float] | str:
    if encoding_format == "base64":
        # OpenAI's base64 format: little-endian float32 bytes.
        return base64.b64encode(np.ascontiguousarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return vec.astype(np.float32).tolist()


def decode_vector(value: list[float] | str) -> np.ndarray:
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f4")
    return np.asarray(value, dtype=np.float32)


def embedding_response(
    vectors: np.ndarray, *, model: str, prompt_tokens: int, encoding_format: str | None
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
