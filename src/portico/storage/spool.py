"""A local spool for records queued for the database: what makes usage rows survive a killed process.

``append`` writes one JSON line to the process's current segment file with a single ``write(2)`` before the request
is answered. The bytes are then in the kernel, not in the process: a SIGKILL (or an OOM kill, or a crash) of the
process loses nothing. A host crash or a lost disk before the batch is committed can still lose them (no fsync:
one per request would cost more than the whole request); that window is the writer's flush interval plus any
database outage.

Segments are rotated before each batch is taken and a segment is deleted once every record in it is committed, so
the spool holds only what the database does not have yet. Each live segment is ``flock``-ed by its process; a
segment nobody holds is an orphan (its process died) and the next process started on the same directory inserts
its records, skipping those already committed (a process can die between a commit and the delete).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("portico.storage")


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int
    count: int = 0  # records appended
    done: int = 0  # records committed


class Spool:
    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._segments: deque[_Segment] = deque()  # oldest first; the last one is being appended to
        self._closed = False

    def _new_segment(self) -> _Segment:
        path = self.dir / f"{os.getpid()}-{time.time_ns()}-{uuid.uuid4().hex[:8]}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while this process lives
        return _Segment(path, fd)

    def append(self, line: bytes) -> None:
        if not self._segments:
            self._segments.append(self._new_segment())
        seg = self._segments[-1]
        os.write(seg.fd, line)  # one write of a small line: all of it or (on a full disk) an error
        seg.count += 1

    def rotate(self) -> None:
        """Start a new segment, so the records queued so far can be committed and their file deleted."""
        if not self._segments or not self._segments[-1].count:
            return
        seg = self._segments[-1]
        if seg.done == seg.count and len(self._segments) == 1:  # all committed: reuse the file
            os.ftruncate(seg.fd, 0)
            seg.count = seg.done = 0
        else:
            self._segments.append(self._new_segment())

    def committed(self, n: int) -> None:
        """The oldest ``n`` appended records are in the database (the writer commits in append order)."""
        while n and self._segments:
            seg = self._segments[0]
            take = min(n, seg.count - seg.done)
            seg.done += take
            n -= take
            if seg.done == seg.count and len(self._segments) > 1:
                self._remove(self._segments.popleft())
            elif take == 0:
                break

    def close(self) -> None:
        """Delete fully committed segments; keep (and unlock) the others for the next start."""
        for seg in self._segments:
            if seg.done == seg.count:
                self._remove(seg)
            else:
                log.warning("usage records left in the spool for the next start",
                            extra={"spool": str(seg.path), "records": seg.count - seg.done})  # fmt: skip
                os.close(seg.fd)
        self._segments.clear()

    def _remove(self, seg: _Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()
        os.close(seg.fd)

    @contextlib.contextmanager
    def orphans(self) -> Iterator[list[tuple[Path, list[bytes]]]]:
        """Segments no live process holds, with their complete lines, locked by us until the block ends; they are
        deleted when it ends without an exception (the caller has stored their records)."""
        own = {seg.path for seg in self._segments}
        held: list[tuple[Path, int, list[bytes]]] = []
        try:
            for path in sorted(self.dir.glob("*.jsonl")):
                if path in own:
                    continue
                try:
                    fd = os.open(path, os.O_RDWR)
                except FileNotFoundError:
                    continue
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:  # a live process's segment, or another worker replaying it
                    os.close(fd)
                    continue
                if os.fstat(fd).st_nlink == 0:  # replayed and deleted by another worker meanwhile
                    os.close(fd)
                    continue
                with open(path, "rb") as f:
                    data = f.read()
                # A line cut short (a full disk) has no newline: it never reached the writer's queue either.
                lines = [ln for ln in data.split(b"\n")[:-1] if ln.strip()]
                held.append((path, fd, lines))
            yield [(p, lines) for p, _, lines in held]
            for path, _, _ in held:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        finally:
            for _, fd, _ in held:
                os.close(fd)
