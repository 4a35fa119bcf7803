"""The ONNX Runtime embedder gives torch's vectors, caches its exported graph, and steps aside when it cannot."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from portico.config.schema import LocalDeployment
from portico.gateway.providers.local import onnx_encoder
from portico.gateway.providers.local.embeddings import SentenceEmbeddingBackend
from portico.gateway.providers.local.onnx_encoder import OnnxSentenceEncoder, OnnxUnsupported
from portico.gateway.providers.local.paths import default_embedder

TEXTS = [
    "How do I reset my password?",
    "",
    "Le contrat est résilié au 31 décembre; 日本語のテキストも少し。",
    " ".join(["The committee reviewed the budget line by line before the vote."] * 60),  # > 256 tokens: truncated
    "ok",
]


@pytest.fixture(scope="module")
def model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(default_embedder()), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def encoder(model, cache_dir: Path) -> OnnxSentenceEncoder:
    mp = pytest.MonkeyPatch()
    mp.setenv("PORTICO_CACHE_DIR", str(cache_dir))
    try:
        return OnnxSentenceEncoder(model)
    finally:
        mp.undo()


def test_vectors_equal_torch_in_any_batch_and_order(model, encoder: OnnxSentenceEncoder) -> None:
    want = model.encode(TEXTS, normalize_embeddings=True, convert_to_numpy=True)
    got = encoder.encode(TEXTS, batch_size=2)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() < 1e-5
    one_by_one = np.stack([encoder.encode([t])[0] for t in TEXTS])
    assert np.abs(one_by_one - got).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_second_start_reads_the_cached_graph(model, encoder, cache_dir: Path, monkeypatch) -> None:
    files = list((cache_dir / "onnx").glob("*.onnx"))
    assert len(files) == 1 and files[0].stat().st_size > 1_000_000
    monkeypatch.setenv("PORTICO_CACHE_DIR", str(cache_dir))

    def no_export(*a, **k):
        raise AssertionError("the cached graph should have been used")

    monkeypatch.setattr(onnx_encoder, "_export", no_export)
    again = OnnxSentenceEncoder(model)
    assert np.abs(again.encode(TEXTS[:1]) - encoder.encode(TEXTS[:1])).max() < 1e-6


def test_a_damaged_cache_file_is_exported_again(model, encoder, cache_dir: Path, tmp_path: Path, monkeypatch) -> None:
    good = next((cache_dir / "onnx").glob("*.onnx")).read_bytes()
    monkeypatch.setenv("PORTICO_CACHE_DIR", str(tmp_path))
    path = onnx_encoder._cache_file(model, encoder.inputs)
    assert path is not None and path.parent.parent == tmp_path
    path.parent.mkdir(parents=True)
    path.write_bytes(good[: len(good) // 3])  # a half-written file from a crashed start
    calls = []

    def export(*a, **k):
        calls.append(1)
        return good  # the real export is exercised by the fixture; here only the recovery path matters

    monkeypatch.setattr(onnx_encoder, "_export", export)
    enc = OnnxSentenceEncoder(model)
    assert calls == [1] and path.read_bytes() == good
    assert np.abs(enc.encode(TEXTS[:1]) - encoder.encode(TEXTS[:1])).max() < 1e-6


def test_unsupported_pooling_is_refused_and_the_backend_stays_on_torch(model) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.models import Pooling

    maxpool = SentenceTransformer(modules=[model[0], Pooling(384, pooling_mode="max")], device="cpu")
    with pytest.raises(OnnxUnsupported, match="pooling mode"):
        OnnxSentenceEncoder(maxpool)
    backend = SentenceEmbeddingBackend(LocalDeployment(provider="local", name="e"))
    backend._model = maxpool
    assert backend._onnx_encoder() is None  # logged, not raised: the model still serves on torch


def test_backend_runtimes(cache_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("PORTICO_CACHE_DIR", str(cache_dir))

    async def run() -> dict[str, np.ndarray]:
        out = {}
        for name, dep in {
            "onnx": LocalDeployment(provider="local", name="e"),
            "torch": LocalDeployment(provider="local", name="e", runtime="torch"),
            "bf16": LocalDeployment(provider="local", name="e", precision="bfloat16"),  # ONNX has no bfloat16 here
        }.items():
            be = SentenceEmbeddingBackend(dep)
            await be.start()
            assert be.runtime == ("onnx" if name == "onnx" else "torch")
            out[name] = await be.vectors(TEXTS)
            await be.close()
        return out

    v = asyncio.run(run())
    assert np.abs(v["onnx"] - v["torch"]).max() < 1e-5
    assert (v["bf16"] * v["torch"]).sum(axis=1).min() > 0.99


def test_int8_is_close_to_float32_and_cached_apart(model, encoder, cache_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("PORTICO_CACHE_DIR", str(cache_dir))
    before = set((cache_dir / "onnx").glob("*.onnx"))
    int8 = OnnxSentenceEncoder(model, quantize=True)
    assert int8.quantized and not encoder.quantized
    new = set((cache_dir / "onnx").glob("*.onnx")) - before
    assert len(new) == 1  # its own file; the float32 graph was reused, not exported again
    (path,) = new
    assert path.stat().st_size < next(iter(before)).stat().st_size / 2  # int8 weights: a quarter, plus scales
    want = encoder.encode(TEXTS)
    got = int8.encode(TEXTS, batch_size=2)
    assert got.dtype == np.float32 and got.shape == want.shape
    cos = (want * got).sum(axis=1)
    # quantized for real, still the same space (very short texts move most: 'ok' ~0.97)
    assert cos.min() > 0.95 and cos.mean() > 0.98 and not np.allclose(got, want, atol=1e-4)
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # reproducible: a text's vector does not depend on what it was sent with (activation scales are per tensor)
    alone = np.stack([int8.encode([t])[0] for t in TEXTS])
    assert np.abs(alone - got).max() < 1e-6 and np.abs(int8.encode(TEXTS[::-1], batch_size=4)[::-1] - got).max() < 1e-6

    def no_work(*a, **k):
        raise AssertionError("the cached int8 graph should have been used")

    monkeypatch.setattr(onnx_encoder, "_export", no_work)
    monkeypatch.setattr(onnx_encoder, "_quantize", no_work)
    again = OnnxSentenceEncoder(model, quantize=True)
    assert np.abs(again.encode(TEXTS) - got).max() < 1e-6


def test_int8_from_a_damaged_float_cache_exports_again(model, encoder, cache_dir: Path, tmp_path: Path, monkeypatch):
    float_graph = onnx_encoder._read(onnx_encoder._cache_file(model, encoder.inputs))
    assert float_graph is not None
    monkeypatch.setenv("PORTICO_CACHE_DIR", str(tmp_path))
    path = onnx_encoder._cache_file(model, encoder.inputs)
    path.parent.mkdir(parents=True)
    path.write_bytes(float_graph[: len(float_graph) // 2])
    calls = []

    def export(*a, **k):
        calls.append(1)
        return float_graph

    monkeypatch.setattr(onnx_encoder, "_export", export)
    int8 = OnnxSentenceEncoder(model, quantize=True)
    assert calls == [1] and path.read_bytes() == float_graph
    assert int8.quantized and (int8.encode(TEXTS[:1]) * encoder.encode(TEXTS[:1])).sum() > 0.95


def test_int8_backend_and_its_fallback(cache_dir: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("PORTICO_CACHE_DIR", str(cache_dir))

    async def vectors(dep: LocalDeployment) -> tuple[str, np.ndarray]:
        be = SentenceEmbeddingBackend(dep)
        await be.start()
        try:
            return be.runtime, await be.vectors(TEXTS)
        finally:
            await be.close()

    runtime, v8 = asyncio.run(vectors(LocalDeployment(provider="local", name="e", precision="int8", runtime="torch")))
    assert runtime == "onnx-int8"  # int8 exists only on ONNX Runtime, whatever runtime says
    _, v32 = asyncio.run(vectors(LocalDeployment(provider="local", name="e", runtime="torch")))
    assert (v8 * v32).sum(axis=1).min() > 0.95

    def broken(graph: bytes) -> bytes:
        raise RuntimeError("quantizer failed")

    monkeypatch.setattr(onnx_encoder, "_quantize", broken)
    monkeypatch.setattr(onnx_encoder, "_cache_file", lambda *a, **k: None)  # no cached int8 graph to fall back on
    runtime, v = asyncio.run(vectors(LocalDeployment(provider="local", name="e", precision="int8")))
    assert runtime == "torch" and np.abs(v - v32).max() < 1e-5
    assert any("stays on torch" in r.getMessage() for r in caplog.records)
