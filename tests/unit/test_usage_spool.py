"""The usage spool: records of a process that died are written by the next one, once, and committed segments go."""

from __future__ import annotations

import os
import time
from pathlib import Path

from sqlalchemy import func, select

from portico.storage.db import Database, usage
from portico.storage.usage import UsageRecord, UsageWriter


def _rec(i: int) -> UsageRecord:
    return UsageRecord(ts=time.time(), request_id=f"req-{i}", endpoint="chat", status=200, model="m",
                       prompt_tokens=i, cost_usd=0.001 * i)  # fmt: skip


def _die(w: UsageWriter) -> None:
    """What a SIGKILL leaves: the files, no process holding their locks, nothing queued in memory."""
    assert w.spool is not None
    for seg in w.spool._segments:
        os.close(seg.fd)
    w.spool._segments.clear()
    w._pending.clear()


async def _count(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(usage))).scalar_one())


async def test_a_dead_process_records_are_written_once_by_the_next(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/u.db")
    await db.create_schema()
    spool = tmp_path / "spool"
    dead = UsageWriter(db, spool_dir=spool, interval=60)
    for i in range(7):
        dead.add(_rec(i))
    # Commit the first 3 but die before their segment is deleted (the window between commit and unlink).
    await dead._insert(list(dead._pending)[:3])
    _die(dead)
    assert len(list(spool.glob("*.jsonl"))) == 1

    live = UsageWriter(db, spool_dir=spool, interval=60)
    assert await live.replay() == 4  # the 3 committed ones are recognised and skipped
    assert await _count(db) == 7
    assert not list(spool.glob("*.jsonl"))
    assert await live.replay() == 0
    await db.close()


async def test_committed_segments_are_deleted_and_a_live_one_is_not_replayed(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/u.db")
    await db.create_schema()
    spool = tmp_path / "spool"
    w = UsageWriter(db, spool_dir=spool, batch_size=2, interval=60)
    w.start()
    for i in range(5):
        w.add(_rec(i))
    other = UsageWriter(db, spool_dir=spool)
    assert await other.replay() == 0  # w's segment is locked by a live writer
    await w.flush()
    w.add(_rec(5))
    await w.flush()
    assert await _count(db) == 6
    assert len(list(spool.glob("*.jsonl"))) <= 1  # at most the current (empty or reused) segment
    await w.close()
    assert not list(spool.glob("*.jsonl"))
    await db.close()


async def test_a_full_queue_refuses_and_counts(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/u.db")
    dropped: list[int] = []
    w = UsageWriter(db, spool_dir=tmp_path / "spool", max_queue=3, on_drop=dropped.append)
    assert [w.add(_rec(i)) for i in range(5)] == [True, True, True, False, False]
    assert w.dropped == 2 and dropped == [1, 1]
    lines = b"".join(p.read_bytes() for p in (tmp_path / "spool").glob("*.jsonl")).splitlines()
    assert len(lines) == 3  # a refused record is not spooled either: counted as dropped, not replayed later
    await db.close()
