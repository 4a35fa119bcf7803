"""uvicorn's httptools protocol plus the two timeouts it lacks, against slow clients.

- Headers: uvicorn waits for a request's headers forever (its keep-alive timer only runs between requests, and any
  byte cancels it), so a client that connects and says nothing, or sends its headers a byte at a time
  (slow-loris), holds a socket and its memory for good. Here the headers must be complete ``header_timeout``
  seconds after the connection opens (or after a kept-alive connection's next request starts); else the
  connection is closed.
- Writes: when a client stops reading, uvicorn's ``send`` waits for the socket to drain forever: a stream keeps
  its upstream call open and its handler parked. Here, once the write buffer is full, the client has
  ``write_timeout`` seconds to take some of it; else the connection is aborted, which the app sees as a
  disconnect (SSE streams then cancel their upstream call, see ``sse.SSEResponse``).

``serve`` passes ``functools.partial(TimedHttpToolsProtocol, header_timeout=…, write_timeout=…)`` as uvicorn's
``http``: a partial of a module-level class pickles, so ``--workers`` processes get it too.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class TimedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, header_timeout: float, write_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.write_timeout = write_timeout
        self._header_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # the next request on a kept-alive connection: its own deadline
            self._header_timer = self.loop.call_later(self.header_timeout, self._too_slow)

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.write_timeout, self._too_slow)

    def resume_writing(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = self._write_timer = None
        self.transport.abort()  # not close(): that would wait to flush a buffer the client is not reading
