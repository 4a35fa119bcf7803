"""Which failures are worth another try, where, and after how long.

* Same deployment again: only transient upstream failures — 429, 502, 503, 504 (timeouts and connection errors
  arrive as 504/503) — and only while the upstream marked them retryable (401/403 are not: a bad key stays bad).
* Another deployment or fallback model: anything but the client's own mistake (400), so 401/403 move on.
* Delay: exponential backoff with full jitter, ``uniform(0, min(backoff_max, backoff * 2**retry))``. An upstream's
  ``Retry-After`` (seconds or an HTTP date) replaces it; when that is longer than ``backoff_max`` the deployment
  is not retried at all — a sooner retry would only be refused again — and the plan moves on at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from datetime import UTC
from email.utils import parsedate_to_datetime

from portico.config.schema import RetryConfig
from portico.protocol.errors import PorticoError, UpstreamError

RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
_MAX_EXPONENT = 32  # 2**32 times any sane backoff is past any cap; avoids huge floats for a silly ``max``


def retry_same(e: PorticoError) -> bool:
    """Whether the same deployment may succeed on another try."""
    return isinstance(e, UpstreamError) and e.retryable and e.status in RETRYABLE_STATUSES


def retry_elsewhere(e: PorticoError) -> bool:
    """Whether another deployment might succeed: not when the client's request itself was rejected."""
    return (isinstance(e, UpstreamError) and e.status != 400) or e.status == 503


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or HTTP date); None when absent or invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000" parses naive; HTTP dates are always UTC
            when = when.replace(tzinfo=UTC)
        return max(0.0, when.timestamp() - now())
    return seconds if seconds >= 0 and seconds != float("inf") else None


class RetryPolicy:
    """One model's retry settings plus its own RNG (no shared global state)."""

    def __init__(
        self, cfg: RetryConfig, rng: random.Random | None = None, now: Callable[[], float] = time.time
    ) -> None:
        self.max = cfg.max
        self.backoff = cfg.backoff
        self.backoff_max = cfg.backoff_max
        self._rng = rng or random.Random()
        self._now = now

    def delay(self, retry: int, e: PorticoError) -> float | None:
        """Seconds to wait before retry number ``retry`` (0-based) after ``e``; None: do not retry here."""
        if retry >= self.max or not retry_same(e):
            return None
        retry_after = parse_retry_after(e.headers.get("retry-after"), self._now)
        if retry_after is not None:
            return retry_after if retry_after <= self.backoff_max else None
        cap = min(self.backoff_max, self.backoff * 2 ** min(retry, _MAX_EXPONENT))
        return self._rng.uniform(0, cap)
