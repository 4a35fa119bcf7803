"""The order in which one model's deployments are tried for a request.

* ``ordered``: as configured — the first is the primary, the rest are spares.
* ``weighted``: weighted-random order (``weight:``), so traffic splits in proportion to the weights.
* ``least_inflight``: fewest calls in flight first; ties in weighted-random order (so idle deployments share).
* ``lowest_latency``: deployments never measured first (so every one gets measured), then by the EWMA of their
  successful calls' latency (time to the answer, or to the first chunk of a stream); ties weighted-random.

Every strategy returns all deployments: the later ones are where retries and failures move on to.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal, Protocol, TypeVar, get_args

Strategy = Literal["ordered", "weighted", "least_inflight", "lowest_latency"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


class LatencyEwma:
    """Exponentially weighted moving average of latency in seconds; ``value`` is None until the first sample."""

    def __init__(self, alpha: float = 0.3) -> None:
        if not 0 < alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        self.alpha = alpha
        self.value: float | None = None

    def observe(self, seconds: float) -> None:
        self.value = seconds if self.value is None else self.alpha * seconds + (1 - self.alpha) * self.value


class Balanced(Protocol):
    """What a strategy needs to know about a deployment."""

    weight: float
    inflight: int
    latency: LatencyEwma


H = TypeVar("H", bound=Balanced)


class Balancer:
    def __init__(self, strategy: str, rng: random.Random | None = None) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown routing strategy '{strategy}'; use one of {', '.join(STRATEGIES)}")
        self.strategy = strategy
        self._rng = rng or random.Random()

    def order(self, handles: Sequence[H]) -> list[H]:
        if self.strategy == "ordered" or len(handles) < 2:
            return list(handles)
        # Python's sort is stable, so sorting the weighted-random order breaks ties at random.
        out = self._weighted(handles)
        if self.strategy == "least_inflight":
            out.sort(key=lambda h: h.inflight)
        elif self.strategy == "lowest_latency":
            out.sort(key=lambda h: (h.latency.value is not None, h.latency.value or 0.0))
        return out

    def _weighted(self, handles: Sequence[H]) -> list[H]:
        # Efraimidis-Spirakis: sorting by u ** (1/w) draws without replacement with probability ∝ weight.
        keys = {id(h): self._rng.random() ** (1.0 / h.weight) for h in handles}
        return sorted(handles, key=lambda h: keys[id(h)], reverse=True)
