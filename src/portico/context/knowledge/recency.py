"""Optional preference for recent chunks: after retrieval the candidates are re-ranked by
``(1 - weight) · relevance + weight · 0.5^(age / half_life)``, relevance min-max normalised over the candidates.

Age comes from a metadata field holding epoch seconds or an ISO-8601 date (default ``ingested_at``, which every
chunk has); a chunk without a usable date counts as infinitely old."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Recency:
    half_life_days: float
    weight: float = 0.3
    field: str = "ingested_at"

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> Recency | None:
        if raw is None:
            return None
        if not isinstance(raw, dict) or set(raw) - {"half_life_days", "weight", "field"}:
            raise ValueError("recency takes half_life_days, weight and field")
        r = cls(**raw)
        if not isinstance(r.half_life_days, int | float) or r.half_life_days <= 0:
            raise ValueError("recency.half_life_days must be a positive number")
        if not isinstance(r.weight, int | float) or not 0 <= r.weight <= 1:
            raise ValueError("recency.weight must be between 0 and 1")
        return r

    def decay(self, meta: dict[str, Any], now: float | None = None) -> float:
        ts = _epoch(meta.get(self.field))
        if ts is None:
            return 0.0
        age_days = max(0.0, ((now or time.time()) - ts) / 86400)
        return 0.5 ** (age_days / self.half_life_days)

    def rerank(self, rows: list[dict[str, Any]], now: float | None = None) -> list[dict[str, Any]]:
        """Rows with ``score`` and ``metadata``, re-ordered; each gets ``recency`` (its decay factor)."""
        if not rows:
            return rows
        scores = [r["score"] for r in rows]
        lo, hi = min(scores), max(scores)
        for r in rows:
            rel = (r["score"] - lo) / (hi - lo) if hi > lo else 1.0
            r["recency"] = round(self.decay(r.get("metadata") or {}, now), 6)
            r["_combined"] = (1 - self.weight) * rel + self.weight * r["recency"]
        rows.sort(key=lambda r: -r["_combined"])
        for r in rows:
            del r["_combined"]
        return rows


def _epoch(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str) and value:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    return None
