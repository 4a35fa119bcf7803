"""A batched background writer: ``add`` only queues; a task inserts batches off the request path.

Shared by usage and trace records. On shutdown everything queued is written before the database closes; a failed
insert is retried with backoff while the batch stays queued, so an accepted request's record is never dropped.
One lock keeps ``flush()`` (admin reports, budget checks) and the background task from writing a batch twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Generic, TypeVar

from portico.storage.db import Database

log = logging.getLogger("portico.storage")

T = TypeVar("T")


class BatchWriter(Generic[T]):
    name = "records"

    def __init__(self, db: Database, *, batch_size: int = 500, interval: float = 0.5) -> None:
        self.db = db
        self.batch_size = batch_size
        self.interval = interval
        self._pending: deque[T] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.written = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"portico-{self.name}-writer")

    def add(self, item: T) -> None:
        self._pending.append(item)
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything queued so far."""
        while self._pending:
            await self._write_batch()

    async def close(self) -> None:
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
        await self.flush()

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
            except Exception:
                failures += 1
                log.exception(f"{self.name} batch write failed; will retry", extra={"queued": len(self._pending)})
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))

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
