"""Reading training and calibration files: pairwise JSONL for ``portico router train``, prompts for calibrate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from portico.routing.preference import PairwiseRecord


def _rows(path: str | Path) -> list[tuple[int, Any]]:
    out = []
    with Path(path).open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append((n, json.loads(line)))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not JSON ({e.msg})") from None
    return out


def load_pairwise(path: str | Path) -> list[PairwiseRecord]:
    """One JSON object a line: ``prompt``, ``model_a``, ``model_b``, ``winner`` (model_a | model_b | tie, or the
    winning model's name)."""
    out = []
    for n, row in _rows(path):
        try:
            out.append(PairwiseRecord.from_dict(row))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{n}: {e}") from None
    return out


def prompt_of(row: Any) -> str:
    """A prompt from a string, ``{"prompt": …}`` or a chat request's last user message."""
    if isinstance(row, str):
        return row
    if isinstance(row, dict):
        if isinstance(row.get("prompt"), str):
            return row["prompt"]
        for m in reversed(row.get("messages") or []):
            if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                return m["content"]
    raise ValueError('expected a string, {"prompt": ...} or {"messages": [...]}')


def load_prompts_with_domains(path: str | Path) -> tuple[list[str], list[str | None]]:
    """Prompts and, for ``{"prompt": …, "domain": …}`` rows, their domain (None elsewhere)."""
    texts: list[str] = []
    domains: list[str | None] = []
    for n, row in _rows(path):
        try:
            texts.append(prompt_of(row))
        except ValueError as e:
            raise ValueError(f"{path}:{n}: {e}") from None
        domain = row.get("domain") if isinstance(row, dict) else None
        domains.append(None if domain is None else str(domain))
    return texts, domains
