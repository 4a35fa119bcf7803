"""Running uvicorn, with a graceful stop a load balancer can rely on.

On SIGTERM (or SIGINT) each worker stops accepting, lets requests and streams in flight finish for up to
``drain_seconds``, then runs the app's shutdown, which writes every queued usage row and trace. With several workers
uvicorn's supervisor holds the listening socket too, and kept it open while its workers drained: the kernel went on
completing connections that nobody would accept, and reset them when the supervisor exited — a request a proxy had
already sent, so one it may not retry (a POST). Here the supervisor stops new connections first (see
``terminate_all``), so a proxy retries them on another replica, and only then stops its workers.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_GRACE = 0.5  # seconds a connection with no request read yet has, once draining, to show one


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, but a drain does not close a connection on which nothing has been read yet: it may
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


def serve(host: str, port: int, workers: int, drain_seconds: float) -> None:
    import uvicorn
    from uvicorn.supervisors.multiprocess import Multiprocess

    options: dict[str, Any] = dict(
        factory=True, host=host, port=port, workers=workers, loop="uvloop", log_config=None,
        http="portico.server.supervisor:DrainingHttpToolsProtocol",
        access_log=False, timeout_graceful_shutdown=drain_seconds,
        # X-Forwarded-* is not trusted by default (it showed in the profile and we do not use the client address).
        proxy_headers=False, server_header=False,
    )  # fmt: skip
    if workers <= 1:
        uvicorn.run("portico.server.app:app_from_env", **options)
        return

    class Supervisor(Multiprocess):
        def terminate_all(self) -> None:
            # Closing the socket resets the connections still in its accept queue: a proxy had sent requests on
            # them, so it may not retry them. First shrink the queue to one connection (the kernel then drops new
            # SYNs; their retransmission a second later finds the port closed: refused, which a proxy retries
            # elsewhere), let the workers, still running, accept what is queued, then close and stop them.
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.listen(0)
            time.sleep(0.3)
            for sock in self.sockets:
                sock.close()
            super().terminate_all()

    config = uvicorn.Config("portico.server.app:app_from_env", **options)
    sock = config.bind_socket()
    with contextlib.suppress(KeyboardInterrupt):
        Supervisor(config, sockets=[sock]).run()
