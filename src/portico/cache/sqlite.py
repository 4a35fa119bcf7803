"""Exact-cache store in a SQLite file: survives restarts and is shared by the workers of one host.

sqlite3 calls run in a worker thread (never on the event loop), one statement batch at a time under a lock.
Policies map to one column each: lru evicts the oldest ``accessed``, lfu the fewest ``hits`` (then the oldest
access), fifo the oldest ``created``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

from portico.cache.store import Clock, Policy

_ORDER = {"lru": "accessed", "lfu": "hits, accessed", "fifo": "created, rowid"}
_SCHEMA = """CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY, value BLOB NOT NULL, expires REAL NOT NULL,
    created REAL NOT NULL, accessed REAL NOT NULL, hits INTEGER NOT NULL DEFAULT 1)"""


class SqliteStore:
    def __init__(self, path: str, max_entries: int, policy: Policy = "lru", *, clock: Clock | None = None) -> None:
        self.max_entries = max_entries
        self.order = _ORDER[policy]
        self.policy = policy
        # Wall clock: entries outlive the process, so monotonic time would not mean anything after a restart.
        self.clock = clock or time.time
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        for col in ("accessed", "hits", "created", "expires"):
            self._db.execute(f"CREATE INDEX IF NOT EXISTS cache_{col} ON cache({col})")
        self._lock = threading.Lock()
        self._seq = 0.0  # breaks ties between writes within one clock tick (fifo/lru order stays exact)

    def _now(self) -> float:
        now = self.clock()
        self._seq = max(self._seq + 1e-6, now)
        return self._seq

    def _get(self, key: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value, expires FROM cache WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            if row[1] <= self.clock():
                self._db.execute("DELETE FROM cache WHERE key = ?", (key,))
                return None
            self._db.execute("UPDATE cache SET accessed = ?, hits = hits + 1 WHERE key = ?", (self._now(), key))
            return bytes(row[0])

    def _set(self, key: str, value: bytes, ttl: float) -> None:
        with self._lock:
            now = self._now()
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cur = self._db.execute(
                    "UPDATE cache SET value = ?, expires = ?, accessed = ? WHERE key = ?", (value, now + ttl, now, key)
                )
                if cur.rowcount == 0:
                    # Expired rows go first, then the policy's victims, so the insert never exceeds the bound.
                    self._db.execute("DELETE FROM cache WHERE expires <= ?", (self.clock(),))
                    (count,) = self._db.execute("SELECT count(*) FROM cache").fetchone()
                    excess = count - self.max_entries + 1
                    if excess > 0:
                        self._db.execute(
                            f"DELETE FROM cache WHERE key IN (SELECT key FROM cache ORDER BY {self.order} LIMIT ?)",
                            (excess,),
                        )
                    self._db.execute(
                        "INSERT INTO cache (key, value, expires, created, accessed) VALUES (?, ?, ?, ?, ?)",
                        (key, value, now + ttl, now, now),
                    )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM cache WHERE key = ?", (key,))

    def _size(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM cache WHERE expires > ?", (self.clock(),)).fetchone()[0])

    async def get(self, key: str) -> bytes | None:
        return await asyncio.to_thread(self._get, key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        await asyncio.to_thread(self._set, key, value, ttl)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, key)

    async def size(self) -> int:
        return await asyncio.to_thread(self._size)

    async def close(self) -> None:
        await asyncio.to_thread(self._db.close)
