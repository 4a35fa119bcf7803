"""Shared counters for limits, budgets and revocations: in-process for one worker, Redis across workers.

Rate windows are sliding windows of 60 one-second buckets per key: admission counts what the last 60 s used,
admits while there is room, and books the request (and its estimated tokens) in the current second — in Redis
atomically in one Lua script, so concurrent requests from any number of workers overshoot a limit by at most
one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("portico.state")

WINDOW = 60


class StateUnavailable(Exception):
    """The shared state (Redis) did not answer; the control plane applies the ``state_outage`` policy."""


@dataclass(frozen=True, slots=True)
class Window:
    allowed: bool
    requests: int  # in the window, this request included when allowed
    tokens: int
    retry_after: int  # seconds until the oldest booking leaves the window (when refused)


class State(Protocol):
    async def take(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Window: ...
    async def add_tokens(self, key_id: str, delta: int) -> None: ...
    async def spend(self, key_id: str, bucket: str) -> float | None: ...
    async def init_spend(self, key_id: str, bucket: str, value: float, ttl: int | None) -> None: ...
    async def add_spend(self, key_id: str, bucket: str, usd: float, ttl: int | None) -> None: ...
    async def revoke(self, key_id: str) -> None: ...
    async def is_revoked(self, key_id: str) -> bool: ...
    async def publish_key_change(self, key_hash: str) -> None: ...
    async def subscribe_key_changes(self, callback: Callable[[str], Awaitable[None]],
                                    resync: Callable[[], Awaitable[None]] | None = None) -> None: ...
    async def close(self) -> None: ...


class MemoryState:
    """One process's counters. Correct only with one worker, which the CLI enforces."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._windows: dict[str, dict[int, list[int]]] = {}
        self._spend: dict[tuple[str, str], float] = {}
        self._revoked: set[str] = set()

    async def take(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Window:
        now = int(self._clock())
        buckets = self._windows.setdefault(key_id, {})
        for sec in [s for s in buckets if s <= now - WINDOW]:
            del buckets[sec]
        req = sum(b[0] for b in buckets.values())
        tok = sum(b[1] for b in buckets.values())
        if (rpm and req >= rpm) or (tpm and tok >= tpm):
            oldest = min(buckets, default=now)
            return Window(False, req, tok, max(1, oldest + WINDOW - now))
        b = buckets.setdefault(now, [0, 0])
        b[0] += 1
        b[1] += tokens
        return Window(True, req + 1, tok + tokens, 0)

    async def add_tokens(self, key_id: str, delta: int) -> None:
        if delta:
            now = int(self._clock())
            self._windows.setdefault(key_id, {}).setdefault(now, [0, 0])[1] += delta

    async def spend(self, key_id: str, bucket: str) -> float | None:
        return self._spend.get((key_id, bucket))

    async def init_spend(self, key_id: str, bucket: str, value: float, ttl: int | None) -> None:
        self._spend.setdefault((key_id, bucket), value)

    async def add_spend(self, key_id: str, bucket: str, usd: float, ttl: int | None) -> None:
        k = (key_id, bucket)
        self._spend[k] = self._spend.get(k, 0.0) + usd

    async def revoke(self, key_id: str) -> None:
        self._revoked.add(key_id)

    async def is_revoked(self, key_id: str) -> bool:
        return key_id in self._revoked

    async def publish_key_change(self, key_hash: str) -> None:
        return None  # one process: the key store already updated its cache

    async def subscribe_key_changes(self, callback: Callable[[str], Awaitable[None]],
                                    resync: Callable[[], Awaitable[None]] | None = None) -> None:
        return None

    async def close(self) -> None:
        return None


_TAKE = """
local now = tonumber(ARGV[1])
local rpm = tonumber(ARGV[2])
local tpm = tonumber(ARGV[3])
local est = tonumber(ARGV[4])
local data = redis.call('HGETALL', KEYS[1])
local req, tok, oldest = 0, 0, now
for i = 1, #data, 2 do
  local f = data[i]
  local sec = tonumber(string.sub(f, 3))
  local v = tonumber(data[i + 1])
  if sec <= now - 60 then
    redis.call('HDEL', KEYS[1], f)
  else
    if string.sub(f, 1, 1) == 'r' then req = req + v else tok = tok + v end
    if sec < oldest then oldest = sec end
  end
end
if (rpm > 0 and req >= rpm) or (tpm > 0 and tok >= tpm) then
  return {0, req, tok, oldest}
end
redis.call('HINCRBY', KEYS[1], 'r:' .. now, 1)
if est ~= 0 then redis.call('HINCRBY', KEYS[1], 't:' .. now, est) end
redis.call('EXPIRE', KEYS[1], 120)
return {1, req + 1, tok + est, oldest}
"""

_CHANNEL = "portico:keys"


class RedisState:
    """Counters in Redis, shared by every worker and replica pointing at the same server.

    Every call fails fast with :class:`StateUnavailable` when Redis is down or slow (short socket timeouts, no
    retries: the caller decides, per the ``state_outage`` policy, and the next call tries again, so recovery needs
    no restart). The key-change subscription reconnects by itself and then asks for a full resync, since changes
    published while it was away are lost.
    """

    def __init__(self, url: str, prefix: str = "portico", timeout: float = 2.0) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError, asyncio.TimeoutError)
        self._redis = redis.from_url(url, decode_responses=True, socket_timeout=timeout,
                                     socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))  # fmt: skip
        self._p = prefix
        self._take = self._redis.register_script(_TAKE)
        self._listener: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def _guard(self, what: str) -> AsyncIterator[None]:
        try:
            yield
        except self._errors as e:
            raise StateUnavailable(f"shared state unreachable ({what}): {type(e).__name__}") from e

    async def ping(self) -> None:
        await self._redis.ping()

    async def take(self, key_id: str, rpm: int | None, tpm: int | None, tokens: int) -> Window:
        now = int(time.time())
        async with self._guard("take"):
            ok, req, tok, oldest = await self._take(keys=[f"{self._p}:rl:{key_id}"],
                                                    args=[now, rpm or 0, tpm or 0, tokens])  # fmt: skip
        return Window(bool(ok), int(req), int(tok), 0 if ok else max(1, int(oldest) + WINDOW - now))

    async def add_tokens(self, key_id: str, delta: int) -> None:
        if delta:
            k = f"{self._p}:rl:{key_id}"
            async with self._guard("add_tokens"), self._redis.pipeline(transaction=False) as p:
                p.hincrby(k, f"t:{int(time.time())}", delta)
                p.expire(k, 120)
                await p.execute()

    async def spend(self, key_id: str, bucket: str) -> float | None:
        async with self._guard("spend"):
            v = await self._redis.get(f"{self._p}:spend:{key_id}:{bucket}")
        return None if v is None else float(v)

    async def init_spend(self, key_id: str, bucket: str, value: float, ttl: int | None) -> None:
        async with self._guard("init_spend"):
            await self._redis.set(f"{self._p}:spend:{key_id}:{bucket}", value, nx=True, ex=ttl)

    async def add_spend(self, key_id: str, bucket: str, usd: float, ttl: int | None) -> None:
        k = f"{self._p}:spend:{key_id}:{bucket}"
        async with self._guard("add_spend"), self._redis.pipeline(transaction=False) as p:
            p.incrbyfloat(k, usd)
            if ttl:
                p.expire(k, ttl)
            await p.execute()

    async def revoke(self, key_id: str) -> None:
        async with self._guard("revoke"):
            await self._redis.sadd(f"{self._p}:revoked", key_id)

    async def is_revoked(self, key_id: str) -> bool:
        async with self._guard("is_revoked"):
            return bool(await self._redis.sismember(f"{self._p}:revoked", key_id))

    async def publish_key_change(self, key_hash: str) -> None:
        try:
            async with self._guard("publish"):
                await self._redis.publish(f"{self._p}:{_CHANNEL}", key_hash)
        except StateUnavailable:  # the change is in the database; others resync when Redis is back
            log.warning("key change not published: shared state unreachable")

    async def subscribe_key_changes(self, callback: Callable[[str], Awaitable[None]],
                                    resync: Callable[[], Awaitable[None]] | None = None) -> None:
        channel = f"{self._p}:{_CHANNEL}"
        pubsub = self._redis.pubsub()
        await pubsub.subscribe(channel)  # the first time an error is the caller's (start-up with Redis down)

        async def listen() -> None:
            nonlocal pubsub
            lost = False
            while True:
                try:
                    if lost:
                        await self._redis.ping()  # raises while Redis is still away
                        pubsub = self._redis.pubsub()
                        await pubsub.subscribe(channel)
                        log.info("key changes: resubscribed; resyncing keys")
                        if resync is not None:
                            await resync()
                        lost = False
                    async for msg in pubsub.listen():
                        if msg.get("type") == "message":
                            try:
                                await callback(msg["data"])
                            except Exception:
                                log.exception("key change handler failed")
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    if not lost:
                        log.warning(f"key changes: subscription lost ({type(e).__name__}); retrying")
                    lost = True
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                    await asyncio.sleep(1.0)

        self._listener = asyncio.create_task(listen(), name="portico-key-changes")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        await self._redis.aclose()


def make_state(url: str) -> State:
    if url == "memory":
        return MemoryState()
    return RedisState(url)
