"""The control plane: who is calling (keys), may they (models, rate limits, budgets), and what it cost.

``authenticate`` → ``admit`` run before the pipeline; ``settle`` runs once the answer is known (for streams:
when the stream ends, however it ends) and books tokens, spend and a usage record. Nothing here blocks: usage
rows go to the batched writer, counters to memory or one Redis round trip.
"""

from __future__ import annotations

import calendar
import functools
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from portico.config.schema import PorticoConfig, secret
from portico.gateway.keys import KeyRecord, KeyStore
from portico.gateway.pricing import cached_tokens
from portico.gateway.state import State, StateUnavailable
from portico.protocol.errors import AuthenticationError, PermissionDenied, RateLimited, ServiceUnavailable
from portico.storage.usage import UsageRecord, UsageWriter, spend_since

log = logging.getLogger("portico.control")


@dataclass(frozen=True, slots=True)
class Caller:
    key: KeyRecord | None = None
    admin: bool = False

    @property
    def name(self) -> str | None:
        return self.key.name if self.key else ("master" if self.admin else None)


ANONYMOUS = Caller()


@dataclass(slots=True)
class Admission:
    caller: Caller
    model: str
    reserved_tokens: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    settled: bool = False


def period_bucket(period: str, now: float) -> tuple[str, float, int | None]:
    """(bucket name, period start epoch, TTL seconds for the counter) of a budget period."""
    # Days and months start on a minute boundary, so the bucket is the same all minute long: computed once a minute.
    return _bucket_of_minute(period, int(now // 60))


@functools.lru_cache(maxsize=16)
def _bucket_of_minute(period: str, minute: int) -> tuple[str, float, int | None]:
    t = time.gmtime(minute * 60)
    if period == "day":
        start = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
        return f"d:{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}", start, 2 * 86400
    if period == "month":
        start = calendar.timegm((t.tm_year, t.tm_mon, 1, 0, 0, 0))
        return f"m:{t.tm_year:04d}-{t.tm_mon:02d}", start, 32 * 86400
    return "total", 0.0, None


def estimate_tokens(text_chars: int) -> int:
    """Admission-time estimate (~4 characters a token); corrected with the real count after the call."""
    return max(1, text_chars // 4)


class ControlPlane:
    def __init__(self, cfg: PorticoConfig, keys: KeyStore, state: State, writer: UsageWriter,
                 on_state_error: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self._master = (secret(cfg.auth.master_key) or "").encode() or None
        self.keys = keys
        self.state = state
        self.writer = writer
        self.fail_closed = cfg.state_outage == "closed"
        self.on_state_error = on_state_error  # counts outages by operation (a metric)
        self._outage_logged = 0.0

    def _state_down(self, what: str, e: Exception) -> None:
        """Apply the ``state_outage`` policy: 503 when closed; when open, carry on without the check."""
        if self.on_state_error is not None:
            self.on_state_error(what)
        now = time.monotonic()
        if now - self._outage_logged > 5.0:  # one line per 5 s, not one per request
            self._outage_logged = now
            log.warning(f"shared state unreachable: {'refusing' if self.fail_closed else 'admitting'} requests "
                        f"without {what}", extra={"error": str(e)})  # fmt: skip
        if self.fail_closed:
            raise ServiceUnavailable(
                "Rate limits and budgets cannot be checked right now (shared state unreachable). Retry shortly.",
                code="state_unavailable", headers={"retry-after": "1"},
            )

    @property
    def auth_enabled(self) -> bool:
        return self._master is not None

    def is_master(self, token: str | None) -> bool:
        return bool(self._master and token and hmac.compare_digest(token.encode(), self._master))

    async def authenticate(self, token: str | None) -> Caller:
        if self.is_master(token):
            return Caller(admin=True)
        rec = None
        if token:
            try:
                rec = await self.keys.lookup(token)
            except StateUnavailable as e:  # the revocation set is in Redis
                self._state_down("revocation check", e)
                rec = await self.keys.lookup(token, check_revoked=False)
        if rec is not None and rec.active:
            return Caller(key=rec)
        if not self.auth_enabled:
            return ANONYMOUS  # embedded default on loopback: keys are optional, unknown ones are ignored
        if rec is not None:
            raise AuthenticationError("This API key has been revoked.", code="revoked_api_key")
        if token:
            raise AuthenticationError("Incorrect API key provided.")
        raise AuthenticationError(
            "Missing API key: send 'Authorization: Bearer <key>' or an 'api-key' header.", code="missing_api_key"
        )

    async def admit(self, caller: Caller, model: str, prompt_chars: Callable[[], int],
                    output_tokens: int = 0) -> Admission:  # fmt: skip
        """``prompt_chars`` is called only when a token limit needs the estimate. ``output_tokens`` (the request's
        max_tokens) is reserved too: concurrent requests on other workers then see the room already taken, so a
        token limit is not overshot by what the requests in flight will generate."""
        adm = Admission(caller, model)
        key = caller.key
        if key is None:
            return adm
        self.check_model(caller, model)
        if key.budget_usd is not None:
            try:
                await self._check_budget(key)
            except StateUnavailable as e:
                self._state_down("budget", e)
        if key.rpm or key.tpm:
            est = estimate_tokens(prompt_chars()) + output_tokens if key.tpm else 0
            try:
                w = await self.state.take(key.id, key.rpm, key.tpm, est)
            except StateUnavailable as e:
                self._state_down("rate limit", e)
                return adm  # admitted unlimited (policy open); nothing reserved, so settle books no correction
            adm.headers = _rate_headers(key, w.requests, w.tokens, w.retry_after)
            if not w.allowed:
                which = "requests" if key.rpm and w.requests >= key.rpm else "tokens"
                raise RateLimited(
                    f"Rate limit reached for key '{key.name}': {which} per minute. Retry after {w.retry_after} s.",
                    headers={**adm.headers, "retry-after": str(w.retry_after)},
                )
            adm.reserved_tokens = est
        return adm

    def check_model(self, caller: Caller, model: str) -> None:
        """403 when the caller's key may not use ``model`` (also for calls that are not admitted, e.g. counting)."""
        key = caller.key
        if key is not None and not key.allows(model):
            raise PermissionDenied(
                f"The key '{key.name}' may not use the model '{model}'.", param="model", code="model_not_allowed"
            )

    async def _check_budget(self, key: KeyRecord) -> None:
        bucket, start, ttl = period_bucket(key.budget_period or "total", time.time())
        spent = await self.state.spend(key.id, bucket)
        if spent is None:  # first use in this period by this process / cluster: start from the stored usage
            try:
                await self.writer.flush()
                stored = await spend_since(self.writer.db, key.id, start)
            except Exception as e:  # the database is down: same policy as shared state being down
                raise StateUnavailable(f"usage store unreachable: {type(e).__name__}") from e
            await self.state.init_spend(key.id, bucket, stored, ttl)
            spent = await self.state.spend(key.id, bucket) or 0.0
        if key.budget_usd is not None and spent >= key.budget_usd:
            raise RateLimited(
                f"Budget of {key.budget_usd} USD per {key.budget_period or 'total'} for key '{key.name}' is spent "
                f"({spent:.6f} USD).", code="insufficient_quota", status=429,
            )  # fmt: skip

    async def settle(
        self,
        adm: Admission,
        *,
        request_id: str,
        endpoint: str,
        status: int,
        usage: dict[str, Any] | None,
        cost: float,
        deployment: str | None,
        application: str | None,
        attempts: int,
        error_type: str | None = None,
    ) -> None:
        if adm.settled:
            return
        adm.settled = True
        usage = usage or {}
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        key = adm.caller.key
        try:
            if key is not None:
                if key.tpm:
                    await self.state.add_tokens(key.id, prompt + completion - adm.reserved_tokens)
                if key.budget_usd is not None and cost:
                    bucket, _, ttl = period_bucket(key.budget_period or "total", time.time())
                    await self.state.add_spend(key.id, bucket, cost, ttl)
        except StateUnavailable as e:  # the usage row below still records the spend
            if self.on_state_error is not None:
                self.on_state_error("settle")
            log.warning("could not book usage in shared state", extra={"request_id": request_id, "error": str(e)})
        except Exception:
            log.exception("could not book usage in shared state", extra={"request_id": request_id})
        record = UsageRecord(
            ts=time.time(), request_id=request_id, endpoint=endpoint, status=status,
            key_id=key.id if key else None, key_name=adm.caller.name, model=adm.model, application=application,
            deployment=deployment, error_type=error_type, prompt_tokens=prompt, completion_tokens=completion,
            cached_tokens=cached_tokens(usage), cost_usd=cost,
            latency_ms=(time.perf_counter() - adm.started) * 1000, attempts=attempts,
        )  # fmt: skip
        self.writer.add(record)
        return record


def _rate_headers(key: KeyRecord, requests: int, tokens: int, reset: int) -> dict[str, str]:
    h: dict[str, str] = {}
    if key.rpm:
        h["x-ratelimit-limit-requests"] = str(key.rpm)
        h["x-ratelimit-remaining-requests"] = str(max(0, key.rpm - requests))
        h["x-ratelimit-reset-requests"] = f"{reset or 60}s"
    if key.tpm:
        h["x-ratelimit-limit-tokens"] = str(key.tpm)
        h["x-ratelimit-remaining-tokens"] = str(max(0, key.tpm - tokens))
        h["x-ratelimit-reset-tokens"] = f"{reset or 60}s"
    return h
