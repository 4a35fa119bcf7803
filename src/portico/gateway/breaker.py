"""A circuit breaker for one deployment: stop sending traffic to it after repeated failures, probe it later.

closed ──(``failures`` consecutive failures)──▶ open ──(``cooldown`` elapsed, next caller)──▶ half-open
half-open admits exactly one probe: its success closes the breaker, its failure re-opens it for another cooldown,
and a probe without a verdict (client went away, client error) lets the next caller probe instead.

Every admitted call holds a :class:`Permit` and reports its outcome with it, so a late result of a call admitted
before the breaker opened is never mistaken for the probe's. Single event loop: no locks needed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class Outcome(Enum):
    SUCCESS = "success"
    FAILURE = "failure"
    NEUTRAL = "neutral"  # no verdict on the deployment's health (cancelled, or the client's own error)


@dataclass(frozen=True, slots=True)
class Permit:
    probe: bool  # the single half-open probe


_ADMIT = Permit(probe=False)
_PROBE = Permit(probe=True)


class CircuitBreaker:
    def __init__(self, failures: int, cooldown: float, clock: Callable[[], float] = time.monotonic) -> None:
        if failures < 1 or cooldown <= 0:
            raise ValueError("failures must be >= 1 and cooldown > 0")
        self.threshold = failures
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0  # consecutive, while closed
        self._opened_at: float | None = None  # None while closed
        self._probing = False
        self.last_error: str | None = None

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._probing else "open"

    def retry_in(self) -> float:
        """Seconds until a probe may go through (0 when closed or already due)."""
        if self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.cooldown - self._clock())

    def acquire(self) -> Permit | None:
        """A permit to call the deployment now, or None to skip it (open, or its probe is already out)."""
        if self._opened_at is None:
            return _ADMIT
        if self._probing or self.retry_in() > 0:
            return None
        self._probing = True
        return _PROBE

    def record(self, permit: Permit, outcome: Outcome, error: str | None = None) -> None:
        if outcome is Outcome.SUCCESS:
            # Any success proves the deployment answers again, probe or not.
            self._failures, self._opened_at, self._probing = 0, None, False
        elif outcome is Outcome.FAILURE:
            self.last_error = error or self.last_error
            if permit.probe and self._probing:
                self._opened_at, self._probing = self._clock(), False  # re-open for a full cooldown
            elif self._opened_at is None:
                self._failures += 1
                if self._failures >= self.threshold:
                    self._opened_at = self._clock()
        elif permit.probe and self._probing:
            self._probing = False  # cooldown already elapsed: the next caller probes
