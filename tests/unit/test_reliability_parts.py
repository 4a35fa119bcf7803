"""The reliability components on their own: balancer strategies, circuit breaker (fake clock), retry delays."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from portico.config.loader import ConfigError, validate
from portico.config.schema import RetryConfig
from portico.gateway.balancer import Balancer, LatencyEwma
from portico.gateway.breaker import CircuitBreaker, Outcome
from portico.gateway.retry import RetryPolicy, parse_retry_after, retry_elsewhere, retry_same
from portico.protocol.errors import InvalidRequest, ServiceUnavailable, UpstreamError

# ---- balancer ---------------------------------------------------------------------------------------------


@dataclass
class H:
    name: str
    weight: float = 1.0
    inflight: int = 0
    latency: LatencyEwma = field(default_factory=LatencyEwma)


def firsts(b: Balancer, handles: list[H], n: int = 2000) -> Counter[str]:
    return Counter(b.order(handles)[0].name for _ in range(n))


def test_every_strategy_returns_every_deployment_once() -> None:
    hs = [H("a"), H("b", 3), H("c", inflight=2)]
    for s in ("ordered", "weighted", "least_inflight", "lowest_latency"):
        out = Balancer(s, random.Random(1)).order(hs)
        assert sorted(h.name for h in out) == ["a", "b", "c"]


def test_unknown_strategy_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown routing strategy"):
        Balancer("fastest")


def test_ordered_keeps_config_order() -> None:
    hs = [H("a"), H("b", 100), H("c")]
    assert [h.name for h in Balancer("ordered").order(hs)] == ["a", "b", "c"]


def test_weighted_first_pick_follows_weights() -> None:
    counts = firsts(Balancer("weighted", random.Random(7)), [H("a", 1), H("b", 3)], n=4000)
    assert 0.70 < counts["b"] / 4000 < 0.80  # expected 0.75; seeded, so deterministic


def test_least_inflight_prefers_idle_and_shares_ties() -> None:
    b = Balancer("least_inflight", random.Random(3))
    busy, idle = H("busy", inflight=4), H("idle", inflight=0)
    assert [h.name for h in b.order([busy, idle])] == ["idle", "busy"]
    counts = firsts(b, [H("x"), H("y")])
    assert counts["x"] > 500 and counts["y"] > 500  # equal load: random tie-break spreads it


def test_lowest_latency_tries_unmeasured_first_then_fastest() -> None:
    b = Balancer("lowest_latency", random.Random(5))
    fast, slow, new = H("fast"), H("slow"), H("new")
    fast.latency.observe(0.1)
    slow.latency.observe(0.9)
    assert [h.name for h in b.order([slow, fast, new])] == ["new", "fast", "slow"]
    new.latency.observe(0.5)
    assert [h.name for h in b.order([slow, fast, new])] == ["fast", "new", "slow"]


def test_ewma_moves_towards_recent_samples() -> None:
    e = LatencyEwma(alpha=0.5)
    assert e.value is None
    e.observe(1.0)
    assert e.value == 1.0
    e.observe(3.0)
    assert e.value == 2.0
    with pytest.raises(ValueError):
        LatencyEwma(alpha=0)


# ---- breaker ----------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(cb: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        permit = cb.acquire()
        assert permit is not None
        cb.record(permit, Outcome.FAILURE, "boom")


def test_breaker_opens_after_consecutive_failures_only() -> None:
    cb = CircuitBreaker(3, 10, Clock())
    fail(cb, 2)
    ok = cb.acquire()
    assert ok is not None
    cb.record(ok, Outcome.SUCCESS)  # resets the streak
    fail(cb, 2)
    assert cb.state == "closed"
    fail(cb)
    assert cb.state == "open"
    assert cb.acquire() is None
    assert cb.last_error == "boom"


def test_breaker_half_open_admits_exactly_one_probe_and_success_closes() -> None:
    clock = Clock()
    cb = CircuitBreaker(1, 10, clock)
    fail(cb)
    clock.now += 9.9
    assert cb.acquire() is None
    assert cb.retry_in() == pytest.approx(0.1)
    clock.now += 0.1
    probe = cb.acquire()
    assert probe is not None and probe.probe
    assert cb.state == "half_open"
    assert cb.acquire() is None  # one probe at a time
    cb.record(probe, Outcome.SUCCESS)
    assert cb.state == "closed"
    assert cb.acquire() is not None


def test_breaker_failed_probe_reopens_for_a_full_cooldown() -> None:
    clock = Clock()
    cb = CircuitBreaker(2, 10, clock)
    fail(cb, 2)
    clock.now += 10
    probe = cb.acquire()
    assert probe is not None
    clock.now += 3
    cb.record(probe, Outcome.FAILURE, "still down")
    assert cb.state == "open"
    assert cb.retry_in() == pytest.approx(10)
    assert cb.last_error == "still down"


def test_breaker_probe_without_verdict_lets_the_next_caller_probe() -> None:
    clock = Clock()
    cb = CircuitBreaker(1, 5, clock)
    fail(cb)
    clock.now += 5
    probe = cb.acquire()
    assert probe is not None
    cb.record(probe, Outcome.NEUTRAL)  # e.g. the client went away
    assert cb.state == "open"
    again = cb.acquire()
    assert again is not None and again.probe


def test_breaker_late_results_of_earlier_calls_do_not_count_as_the_probe() -> None:
    clock = Clock()
    cb = CircuitBreaker(1, 5, clock)
    early = cb.acquire()  # admitted while closed, answers late
    assert early is not None
    fail(cb)
    clock.now += 5
    probe = cb.acquire()
    assert probe is not None
    cb.record(early, Outcome.FAILURE)  # not the probe: breaker stays half-open
    assert cb.state == "half_open"
    cb.record(probe, Outcome.SUCCESS)
    assert cb.state == "closed"


def test_breaker_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1)


# ---- retry ------------------------------------------------------------------------------------------------


def up(status: int, retryable: bool = True, retry_after: str | None = None) -> UpstreamError:
    headers = {"retry-after": retry_after} if retry_after is not None else None
    return UpstreamError("x", status=status, retryable=retryable, headers=headers)


@pytest.mark.parametrize(
    ("err", "same", "elsewhere"),
    [
        (up(429), True, True),
        (up(502), True, True),
        (up(503), True, True),  # unreachable
        (up(504), True, True),  # timeout
        (up(400, retryable=False), False, False),  # the upstream rejected the client's request
        (up(502, retryable=False), False, True),  # 401/403 from upstream: a bad key — move on, don't repeat
        (InvalidRequest("bad"), False, False),
        (ServiceUnavailable("loading"), False, True),  # a local model not loaded yet
    ],
)
def test_which_errors_are_retried_where(err, same: bool, elsewhere: bool) -> None:
    assert retry_same(err) is same
    assert retry_elsewhere(err) is elsewhere


def test_parse_retry_after_seconds_and_dates() -> None:
    now = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()
    assert parse_retry_after("3", lambda: now) == 3.0
    assert parse_retry_after(" 1.5 ", lambda: now) == 1.5
    later = format_datetime(datetime(2025, 1, 1, 12, 0, 7, tzinfo=UTC), usegmt=True)  # "Wed, 01 Jan 2025 12:00:07 GMT"
    assert parse_retry_after(later, lambda: now) == pytest.approx(7)
    assert parse_retry_after("Wed, 01 Jan 2025 11:00:00 GMT", lambda: now) == 0.0  # in the past: no wait
    assert parse_retry_after("Wed, 01 Jan 2025 12:00:02 -0000", lambda: now) == pytest.approx(2)
    for bad in (None, "", "soon", "-1", "inf", "nan-ish"):
        assert parse_retry_after(bad, lambda: now) is None


def policy(max_: int = 5, backoff: float = 0.5, backoff_max: float = 3.0, seed: int = 0) -> RetryPolicy:
    return RetryPolicy(RetryConfig(max=max_, backoff=backoff, backoff_max=backoff_max), random.Random(seed))


def test_backoff_is_full_jitter_under_an_exponential_capped_ceiling() -> None:
    p = policy()
    for retry, ceiling in enumerate([0.5, 1.0, 2.0, 3.0, 3.0]):
        delays = [p.delay(retry, up(503)) for _ in range(300)]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not a fixed step
        assert min(delays) < ceiling * 0.2


def test_no_retry_past_max_or_for_non_retryable_errors() -> None:
    p = policy(max_=2)
    assert p.delay(1, up(503)) is not None
    assert p.delay(2, up(503)) is None
    assert p.delay(0, up(400, retryable=False)) is None
    assert p.delay(0, up(502, retryable=False)) is None
    assert policy(max_=0).delay(0, up(503)) is None


def test_retry_after_replaces_backoff_up_to_backoff_max() -> None:
    p = policy(backoff_max=3.0)
    assert p.delay(0, up(429, retry_after="2")) == 2.0
    assert p.delay(0, up(429, retry_after="3")) == 3.0
    assert p.delay(0, up(429, retry_after="30")) is None  # longer than we would wait: move on at once
    assert 0 <= p.delay(0, up(429, retry_after="garbage")) <= 0.5  # unparseable: ordinary backoff


def test_huge_retry_counts_do_not_overflow() -> None:
    p = policy(max_=10_000)
    assert 0 <= p.delay(5000, up(503)) <= 3.0


# ---- config -----------------------------------------------------------------------------------------------


def model_cfg(**extra) -> dict:
    return {"models": [{"name": "m", "deployments": [{"provider": "openai", "base_url": "http://x/v1"}], **extra}]}


def test_reliability_defaults() -> None:
    m = validate(model_cfg()).models[0]
    assert m.routing.strategy == "weighted"
    assert (m.retries.max, m.retries.backoff, m.retries.backoff_max) == (2, 0.25, 8.0)
    assert (m.circuit_breaker.failures, m.circuit_breaker.cooldown) == (5, 30.0)


def test_reliability_blocks_are_validated() -> None:
    m = validate(
        model_cfg(
            routing={"strategy": "least_inflight"},
            retries={"max": 0},
            circuit_breaker={"failures": 2, "cooldown": 1.5},
        )
    ).models[0]
    assert (m.routing.strategy, m.retries.max, m.circuit_breaker.failures) == ("least_inflight", 0, 2)
    for bad in (
        {"routing": {"strategy": "fastest"}},
        {"retries": {"max": -1}},
        {"retries": {"tries": 3}},
        {"circuit_breaker": {"failures": 0}},
        {"circuit_breaker": {"cooldown": 0}},
    ):
        with pytest.raises(ConfigError, match=r"models\[0\]"):
            validate(model_cfg(**bad))
