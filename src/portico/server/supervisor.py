"""Running uvicorn, with a graceful stop a load balancer can rely on.

On SIGTERM (or SIGINT) each worker stops accepting, lets requests and streams in flight finish for up to
``drain_seconds``, then runs the app's shutdown, which writes every queued usage row and trace. With several workers
uvicorn's supervisor holds the listening socket too, and kept it open while its workers drained: the kernel went on
completing connections that nobody would accept, and reset them when the supervisor exited — a request a proxy had
already sent, so one it may not retry (a POST). Here the supervisor stops new connections at once (``Supervisor``),
so a proxy retries them on another replica, and its workers empty the accept queue before they close the socket
and drain (``DrainingServer``, ``DrainingHttpToolsProtocol``). One worker (``--workers 1``) runs uvicorn as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import socket
from typing import Any

import uvicorn
from uvicorn.supervisors import multiprocess
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from portico.server.http_protocol import TimedHttpToolsProtocol

_GRACE = 0.5  # seconds a connection with no request read yet has, once draining, to show one


class DrainingHttpToolsProtocol(TimedHttpToolsProtocol):
    """uvicorn's HTTP protocol with the slow-client timeouts (http_protocol.py), but a drain does not close a
    connection on which nothing has been read yet: it may
    be a fresh connection whose request a proxy has already sent (closing it with unread data resets it, and the
    proxy may not retry a POST). Such a connection gets ``_GRACE`` seconds; a request that starts in them is
    answered, then the connection closes."""

    _draining = False

    def shutdown(self) -> None:
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self._draining = True
            self.loop.call_later(_GRACE, self._close_if_idle)
            return
        super().shutdown()

    def _close_if_idle(self) -> None:
        if not self.transport.is_closing():
            super().shutdown()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answer it, then close


_ACCEPT_GRACE = 0.3  # seconds a stopping worker still accepts: what the (shrunk) accept queue holds gets served


class DrainingServer(uvicorn.Server):
    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        # New connections are already held back (the supervisor shrank the accept queue and closed its copy of
        # the socket): keep accepting a moment so the queue is empty when this process closes the socket.
        await asyncio.sleep(_ACCEPT_GRACE)
        await super().shutdown(sockets)


class DrainingProcess(Process):
    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(config=self.config)
        return self._server


class Supervisor(Multiprocess):
    """On SIGTERM/SIGINT, at once (not at the next turn of the supervisor's loop): shrink the accept queue to one
    connection — the kernel then drops new SYNs, whose retransmission a second later finds the port closed and is
    refused, which a proxy retries elsewhere — and close the supervisor's copy of the socket. The workers, still
    accepting for a moment, empty the queue, then close theirs and drain."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self._accepting = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_stop)

    def _on_stop(self, sig: int, frame: Any) -> None:
        self._stop_accepting()
        self.signal_queue.append(sig)

    def _stop_accepting(self) -> None:
        if not self._accepting:
            return
        self._accepting = False
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.listen(0)
            sock.close()

    def terminate_all(self) -> None:
        self._stop_accepting()
        super().terminate_all()


def serve(host: str, port: int, workers: int, drain_seconds: float, *, header_timeout: float = 15.0,
          write_timeout: float = 60.0) -> None:
    # A partial of a module-level class pickles, so --workers processes get the timeouts too.
    http = functools.partial(DrainingHttpToolsProtocol, header_timeout=header_timeout, write_timeout=write_timeout)
    options: dict[str, Any] = dict(
        factory=True, host=host, port=port, workers=workers, loop="uvloop", log_config=None, http=http,
        access_log=False, timeout_graceful_shutdown=drain_seconds,
        # X-Forwarded-* is not trusted by default (it showed in the profile and we do not use the client address).
        proxy_headers=False, server_header=False,
    )  # fmt: skip
    if workers <= 1:
        uvicorn.run("portico.server.app:app_from_env", **options)
        return
    multiprocess.Process = DrainingProcess  # type: ignore[misc]  # the supervisor makes its workers by this name

    config = uvicorn.Config("portico.server.app:app_from_env", **options)
    sock = config.bind_socket()
    with contextlib.suppress(KeyboardInterrupt):
        Supervisor(config, sockets=[sock]).run()
