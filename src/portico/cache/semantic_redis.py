"""The semantic cache shared through Redis, for a Redis without a vector search module.

Plain Redis (no RediSearch) cannot search vectors, so the work is split:

* **Redis is the source of truth.** Each entry is a hash ``{prefix}:e:{id}`` (scope, question, float32
  embedding, answer, absolute expiry) with Redis's own TTL (PEXPIRE). A sorted set ``{prefix}:order`` holds the
  ids oldest first for the size bound, ``{prefix}:t:{sha1(scope, question)}`` points at the entry holding a
  question (the same question again replaces its answer), and a stream ``{prefix}:log`` records every addition
  (with its embedding) and removal, each event numbered by a counter ``{prefix}:n``; the log keeps about its last
  ``log_length`` (10,000) events, some 2 kB each at 384 dimensions. A write is one Lua script,
  so all of it happens atomically and the log's order is the store's order.
* **Each replica searches a local mirror**: an hnswlib index (the embedded ``SemanticIndex``) of the vectors,
  without the answers. Before a lookup the replica reads what the log gained since it last looked (one
  non-blocking XREAD, with the event counter in the same MULTI) and applies it, then searches locally.
* **Nothing is served on the mirror's word alone.** The candidates' answers are read from their hashes in one
  pipelined round trip; a candidate whose hash is gone (expired by Redis, evicted, replaced) or whose scope
  differs is dropped (and removed from the mirror). So an expired, evicted or other tenant's entry is never
  served, whatever the mirror holds.
* **A replica that cannot follow the log rebuilds its mirror**: at start, when events were trimmed away before
  it read them (the counter jumped), or when the counter went backwards (the keys were cleared). It snapshots the
  counter, the log's last id and the ids in the order set (one MULTI), reads their hashes (pipelined), builds a
  new index in a worker thread (hnswlib inserts would block the event loop for seconds at 100k entries), swaps
  it in and replays the log from the snapshot; ids only grow and events apply idempotently, so the replay
  converges on the store's state. Meanwhile a lookup waits at most ``load_wait`` (0.1 s: a small cache is
  loaded by then) and then searches the mirror it has — empty at start, stale during a rebuild: misses, never
  wrong answers, since the hash check above still decides what is served.

Consistency: once a replica's mirror is loaded, a write that has returned on replica A is seen by every lookup
that starts after it on any replica (the XREAD comes first): read-your-writes across replicas. Expiry is Redis's
clock; the mirror drops entries by the expiry recorded in the event (this host's clock) only to save memory, and
the hash check makes clock skew harmless. The costs: every replica holds every vector of the cache (hnswlib's copy
and the entry's, about 8 bytes per dimension, plus the question); a lookup makes two round trips (catch up, then
read the candidates' answers); a write applies on each replica at its next lookup (an hnswlib insert each); a
replica's first load takes seconds at 100k entries (bench/results/cache_backends.md). The scripts build entry key
names from the prefix, so this needs one Redis server (or a primary with replicas), not Redis Cluster.

Why not a cleaner alternative: brute-force scoring inside a Lua script would make Redis run O(n · dim)
arithmetic per lookup on its single thread (tens of ms at 100k entries, blocking every other client); a mirror
without the log (rebuilt periodically) would not see another replica's fresh answer until the next rebuild.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from portico.cache.semantic import Entry, SemanticIndex

log = logging.getLogger("portico.cache")
DEFAULT_PREFIX = "portico:semantic"
READ_BATCH = 512  # log events per XREAD
LOAD_BATCH = 1000  # hashes per pipeline when rebuilding the mirror
EXPIRE_EVERY = 60.0  # seconds between sweeps of the mirror for expired entries (a search drops those it meets)

_ADD = """
local prefix = ARGV[1]
local dim = redis.call('GET', KEYS[5])
if not dim then redis.call('SET', KEYS[5], ARGV[8]) elseif dim ~= ARGV[8] then
  return redis.error_reply('DIM ' .. dim)
end
local function event(op, id, ...)
  local n = redis.call('INCR', KEYS[4])
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'n', n, 'op', op, 'id', id, ...)
end
local function drop(id)
  local ek = prefix .. ':e:' .. id
  local tk = redis.call('HGET', ek, 'tk')
  if tk and redis.call('GET', tk) == id then redis.call('DEL', tk) end
  redis.call('DEL', ek)
  redis.call('ZREM', KEYS[2], id)
  event('del', id)
end
-- the same question again: the newer answer replaces the older
local old = redis.call('GET', KEYS[6])
if old then drop(old) end
-- expired entries at the old end of the order leave first (Redis has already dropped their hashes)
for _ = 1, 16 do
  local first = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #first == 0 or redis.call('EXISTS', prefix .. ':e:' .. first[1]) == 1 then break end
  drop(first[1])
end
-- the bound: oldest out
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[7]) + 1
while excess > 0 do
  drop(redis.call('ZRANGE', KEYS[2], 0, 0)[1])
  excess = excess - 1
end
local id = redis.call('INCR', KEYS[1])
local now = redis.call('TIME')
local expires = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[6])
local ek = prefix .. ':e:' .. id
redis.call('HSET', ek, 's', ARGV[2], 'q', ARGV[3], 'e', ARGV[4], 'v', ARGV[5], 'x', expires, 'tk', KEYS[6])
redis.call('PEXPIRE', ek, ARGV[6])
redis.call('SET', KEYS[6], id, 'PX', ARGV[6])
redis.call('ZADD', KEYS[2], id, id)
event('add', id, 's', ARGV[2], 'q', ARGV[3], 'e', ARGV[4], 'x', expires)
return id
"""


def _vec(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)


class RedisSemanticStore:
    """A ``SemanticStore`` shared through Redis, searched in a local mirror (see the module docstring)."""

    def __init__(self, url: str, max_entries: int, *, prefix: str = DEFAULT_PREFIX, log_length: int = 10_000,
                 load_wait: float = 0.1) -> None:  # fmt: skip
        self.redis = aioredis.from_url(url)
        self.load_wait = load_wait  # how long a lookup waits for a (re)load before searching the mirror it has
        self.max_entries = max_entries
        self.prefix = prefix
        self.log_length = log_length
        self.k_id, self.k_order, self.k_log = f"{prefix}:id", f"{prefix}:order", f"{prefix}:log"
        self.k_n, self.k_dim = f"{prefix}:n", f"{prefix}:dim"
        self.mirror = SemanticIndex(None, max_entries, clock=time.time)
        self._add = self.redis.register_script(_ADD)
        self._n: int | None = None  # the last event applied; None: the mirror is not loaded
        self._last = "0-0"  # its stream id
        self._max_id = 0  # ids only grow: an add at or below this one was loaded or has been removed since
        self._lock = asyncio.Lock()  # the mirror's state: catch-up, search and the swap after a rebuild
        self._rebuilding: asyncio.Task[None] | None = None
        self._load_error: Exception | None = None
        self._expired_at = time.monotonic()
        self.rebuilds = 0

    def _e(self, entry_id: int | str) -> str:
        return f"{self.prefix}:e:{entry_id}"

    def _t(self, scope: str, text: str) -> str:
        return f"{self.prefix}:t:" + hashlib.sha1(f"{scope}\x1f{text}".encode()).hexdigest()

    # -- SemanticStore ----------------------------------------------------------------------------------------
    async def put(self, scope: str, text: str, vector: np.ndarray, value: bytes, ttl: float) -> None:
        vec = np.ascontiguousarray(vector, dtype="<f4")
        keys = [self.k_id, self.k_order, self.k_log, self.k_n, self.k_dim, self._t(scope, text)]
        args = [self.prefix, scope, text, vec.tobytes(), value, max(1, int(ttl * 1000)), self.max_entries,
                vec.shape[-1], self.log_length]  # fmt: skip
        try:
            await self._add(keys=keys, args=args)
        except ResponseError as e:
            if str(e).startswith("DIM "):
                raise ValueError(f"embedding has {vec.shape[-1]} dimensions; this cache holds {str(e)[4:]}") from None
            raise

    async def search(self, scope: str, vector: np.ndarray, k: int) -> list[tuple[Entry, float]]:
        async with self._lock:
            await self._catch_up()  # may start a (re)load ...
        if self._rebuilding is not None:  # ... worth a short wait: a small cache loads in milliseconds
            await self._await_rebuild(self.load_wait)
            if self._n is None and self._load_error is not None:  # never loaded, and the last try failed
                error, self._load_error = self._load_error, None
                raise error
            if self._rebuilding is None:
                async with self._lock:
                    await self._catch_up()
        async with self._lock:
            cands = self.mirror.candidates(scope, vector, k)
        if not cands:
            return []
        async with self.redis.pipeline(transaction=False) as p:
            for e, _ in cands:
                p.hmget(self._e(e.id), "s", "v", "x")
            rows = await p.execute()
        out, gone = [], []
        for (e, sim), (s, value, expires) in zip(cands, rows, strict=True):
            if value is None or s is None or s.decode() != scope:  # expired, evicted or replaced in Redis
                gone.append(e.id)
                continue
            out.append((Entry(e.id, scope, e.text, e.vector, bytes(value), int(expires) / 1000), sim))
        if gone:
            async with self._lock:
                for entry_id in gone:
                    self.mirror.remove(entry_id)
        return out

    async def open(self) -> None:
        """Load the mirror now and wait for it (a lookup waits at most ``load_wait``, then searches what the
        mirror has: an empty one at first, a stale one during a rebuild — misses, never wrong answers)."""
        async with self._lock:
            await self._catch_up()
        await self._await_rebuild(None)
        async with self._lock:
            await self._catch_up()

    async def count(self) -> int:
        return int(await self.redis.zcard(self.k_order))

    async def close(self) -> None:
        task = self._rebuilding
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.redis.aclose()

    async def clear(self) -> None:
        """Drop every key under this prefix (tests, and a cache being retired)."""
        keys = [k async for k in self.redis.scan_iter(f"{self.prefix}:*", count=1000)]
        for i in range(0, len(keys), 1000):
            await self.redis.delete(*keys[i : i + 1000])

    # -- the mirror -------------------------------------------------------------------------------------------
    async def _await_rebuild(self, timeout: float | None) -> None:
        task = self._rebuilding
        if task is not None:
            await asyncio.wait({task}, timeout=timeout)

    async def _catch_up(self) -> None:
        """Apply what the log gained since the last look (the caller holds the lock). When the log cannot tell
        (nothing loaded yet, events trimmed before this replica read them, the counter went backwards because
        the keys were cleared), start a rebuild in the background and keep the mirror as it is meanwhile."""
        if self._rebuilding is not None:
            return
        if self._n is None:
            return self._start_rebuild()
        while True:
            async with self.redis.pipeline(transaction=True) as p:
                p.xread({self.k_log: self._last}, count=READ_BATCH)
                p.get(self.k_n)
                read, n_raw = await p.execute()
            events = read[0][1] if read else []
            n_now = int(n_raw or 0)
            if n_now < self._n or (events and int(events[0][1][b"n"]) != self._n + 1):
                return self._start_rebuild()
            if len(events) > 64:  # a backlog: hnswlib inserts off the event loop (the lock keeps searches out)
                await asyncio.to_thread(self._apply_all, events)
            else:
                self._apply_all(events)
            if len(events) < READ_BATCH:
                if self._n != n_now:  # the log holds fewer events than the counter says: trimmed
                    return self._start_rebuild()
                if time.monotonic() - self._expired_at >= EXPIRE_EVERY:
                    self._expired_at = time.monotonic()
                    self.mirror.expire()  # entries past their expiry leave the mirror (memory only)
                return

    def _apply_all(self, events: list) -> None:
        for stream_id, fields in events:
            self._apply(fields)
            self._n = int(fields[b"n"])
            self._last = stream_id.decode()

    def _apply(self, f: dict[bytes, bytes]) -> None:
        entry_id = int(f[b"id"])
        if f[b"op"] == b"del":
            self.mirror.remove(entry_id)
            return
        if entry_id <= self._max_id:
            return
        self._max_id = entry_id
        ttl = int(f[b"x"]) / 1000 - time.time()
        if ttl > 0:
            self.mirror.add(f[b"s"].decode(), f[b"q"].decode(), _vec(f[b"e"]), b"", ttl, entry_id=entry_id)

    def _start_rebuild(self) -> None:
        self.rebuilds += 1
        self._rebuilding = asyncio.get_running_loop().create_task(self._rebuild())

    async def _rebuild(self) -> None:
        """A new mirror from a snapshot of the order set (ids) and the hashes, built off the event loop, then
        swapped in; the log is replayed from the snapshot's point by the next catch-up."""
        try:
            async with self.redis.pipeline(transaction=True) as p:
                p.get(self.k_n)
                p.xrevrange(self.k_log, count=1)
                p.zrange(self.k_order, 0, -1)
                n_raw, last, ids_raw = await p.execute()
            ids = [int(i) for i in ids_raw]
            rows = []
            for i in range(0, len(ids), LOAD_BATCH):
                batch = ids[i : i + LOAD_BATCH]
                async with self.redis.pipeline(transaction=False) as p:
                    for entry_id in batch:
                        p.hmget(self._e(entry_id), "s", "q", "e", "x")
                    rows += [(entry_id, *r) for entry_id, r in zip(batch, await p.execute(), strict=True)]
            mirror = await asyncio.to_thread(self._build, rows)
            async with self._lock:
                self.mirror = mirror
                self._n = int(n_raw or 0)
                self._last = last[0][0].decode() if last else "0-0"
                self._max_id = max(ids, default=0)
            self._load_error = None
        except Exception as e:
            log.warning("semantic cache: loading the mirror of %s failed: %s", self.prefix, e)
            self._load_error = e
        finally:
            self._rebuilding = None

    def _build(self, rows: list[tuple]) -> SemanticIndex:
        mirror = SemanticIndex(None, self.max_entries, clock=time.time)
        now = time.time()
        for entry_id, s, q, e, x in rows:
            if s is None or q is None or e is None or x is None:
                continue  # gone since the id list was read
            ttl = int(x) / 1000 - now
            if ttl > 0:
                mirror.add(s.decode(), q.decode(), _vec(e), b"", ttl, entry_id=entry_id)
        return mirror
