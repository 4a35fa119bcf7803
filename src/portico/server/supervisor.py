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


def serve(host: str, port: int, workers: int, drain_seconds: float) -> None:
    import uvicorn
    from uvicorn.supervisors.multiprocess import Multiprocess

    options: dict[str, Any] = dict(
        factory=True, host=host, port=port, workers=workers, loop="uvloop", http="httptools", log_config=None,
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
