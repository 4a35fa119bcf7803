"""A batched background writer: ``add`` only queues; a task inserts batches off the request path.

Shared by usage and request-metadata records. On shutdown everything queued is written before the database closes;
a failed insert (the database is down) is retried with backoff, at most ``max_retry_seconds`` apart, while the batch
stays queued, so records queued during an outage are written once it is over. The queue is bounded
(``max_queue``): past it a record is refused, and ``on_drop`` counts it (a metric), never silently.
One lock keeps ``flush()`` (admin reports, budget checks) and the background task from writing a batch twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from portico.storage.db import Database

log = logging.getLogger("portico.storage")

T = TypeVar("T")


class BatchWriter(Generic[T]):
    name = "records"

    def __init__(self, db: Database, *, batch_size: int = 500, interval: float = 0.5, max_queue: int = 100_000,
                 max_retry_seconds: float = 2.0, on_drop: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.db = db
        self.batch_size = batch_size
        self.interval = interval
        self.max_queue = max_queue
        self.max_retry_seconds = max_retry_seconds
        self.on_drop = on_drop
        self.dropped = 0
        self.failing = False  # the last write failed (the database is unreachable): read by health reports
        self._pending: deque[T] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"portico-{self.name}-writer")

    def add(self, item: T) -> bool:
        """Queue ``item``; False (and counted) when the queue is full."""
        if len(self._pending) >= self.max_queue:
            self._drop(1)
            return False
        self._pending.append(item)
        if len(self._pending) >= self.batch_size:
            self._wake.set()
        return True

    def _drop(self, n: int) -> None:
        self.dropped += n
        log.error(f"{self.name} queue full: record dropped", extra={"queued": len(self._pending)})
        if self.on_drop is not None:
            self.on_drop(n)

    async def flush(self) -> None:
        """Write everything queued so far."""
        while self._pending:
            await self._write_batch()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        for attempt in range(3):  # the database may be restarting along with us
            try:
                await self.flush()
                return
            except Exception:
                if attempt == 2:
                    log.exception(f"{self.name} records not written at shutdown", extra={"queued": len(self._pending)})
                else:
                    await asyncio.sleep(0.5)

    async def _run(self) -> None:
        failures = 0
        while not self._closing:
            timed_out = False
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                timed_out = True
            self._wake.clear()
            try:
                # Woken by a full batch: full batches only (a partial one waits for the interval), so a busy
                # server writes few large transactions, not one per handful of requests.
                while len(self._pending) >= (1 if timed_out else self.batch_size) and not self._closing:
                    await self._write_batch()
                failures = 0
                self.failing = False
            except Exception as e:
                failures += 1
                self.failing = True
                # One traceback per outage, then one line per retry: a database outage must not flood the logs.
                if failures == 1:
                    log.exception(f"{self.name} batch write failed; will retry", extra={"queued": len(self._pending)})
                else:
                    log.warning(f"{self.name} batch write failed again ({type(e).__name__}); will retry",
                                extra={"queued": len(self._pending)})  # fmt: skip
                # Capped: once the database is back the backlog is written within max_retry_seconds.
                await asyncio.sleep(min(self.max_retry_seconds, 0.25 * 2**failures))

    async def _write_batch(self) -> None:
        async with self._lock:
            batch = [self._pending[i] for i in range(min(self.batch_size, len(self._pending)))]
            if not batch:
                return
            await self._insert(batch)
            for _ in batch:  # removed only once the rows are committed
                self._pending.popleft()
            self.written += len(batch)
        await self._written(batch)

    async def _insert(self, batch: list[T]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    async def _written(self, batch: list[T]) -> None:
        """Hook after a batch is committed (e.g. export it elsewhere)."""
        return None
