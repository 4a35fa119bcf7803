"""Running uvicorn, with a graceful stop a load balancer can rely on.

On SIGTERM (or SIGINT) each worker stops accepting, lets requests and streams in flight finish for up to
``drain_seconds``, then runs the app's shutdown, which writes every queued usage row and trace. With several workers
uvicorn's supervisor holds the listening socket too, and kept it open while its workers drained: the kernel went on
completing connections that nobody would accept, and reset them when the supervisor exited — a request a proxy had
already sent, so one it may not retry (a POST). Here the supervisor closes its copy first, so a draining replica
refuses new connections at once and a proxy retries them on another replica.
"""

from __future__ import annotations

import contextlib
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
            for sock in self.sockets:  # refuse new connections from now on (see the module's doc)
                sock.close()
            super().terminate_all()

    config = uvicorn.Config("portico.server.app:app_from_env", **options)
    sock = config.bind_socket()
    with contextlib.suppress(KeyboardInterrupt):
        Supervisor(config, sockets=[sock]).run()
