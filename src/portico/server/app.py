"""The ASGI application."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from portico.config.loader import config_path_from_env, load_config
from portico.config.schema import PorticoConfig
from portico.observability.logging import setup_logging
from portico.protocol.errors import PorticoError
from portico.runtime import Runtime
from portico.server import admin, errors, handoffs_api, knowledge_api, requests_api, stats_api, tools_api, ui
from portico.server.chat import chat_completions
from portico.server.embeddings import embeddings
from portico.server.meta import get_model, healthz, list_models, metrics, readyz
from portico.server.middleware import RequestIdMiddleware

log = logging.getLogger("portico.server")


def create_app(cfg: PorticoConfig, *, wait_for_models: bool = False) -> Starlette:
    """Build the app. Local models load in the background after start-up (``/readyz`` says when), unless
    ``wait_for_models`` is set."""
    runtime = Runtime(cfg)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime.started_at = int(time.time())
        await runtime.open()
        # Everything built so far lives as long as the process: keep it out of the cyclic GC's scans, which
        # otherwise show up as latency spikes under load.
        gc.freeze()
        loading = asyncio.ensure_future(runtime.gateway.start())
        if wait_for_models:
            await loading
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            await runtime.close()

    routes = [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        *knowledge_api.routes(),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/admin/keys", admin.create_key, methods=["POST"]),
        Route("/admin/keys", admin.list_keys, methods=["GET"]),
        Route("/admin/keys/{key_id}", admin.get_key, methods=["GET"]),
        Route("/admin/keys/{key_id}", admin.update_key, methods=["PATCH"]),
        Route("/admin/keys/{key_id}", admin.revoke_key, methods=["DELETE"]),
        Route("/admin/usage", admin.get_usage, methods=["GET"]),
        Route("/admin/requests", requests_api.list_requests, methods=["GET"]),
        Route("/admin/requests/{request_id:path}", requests_api.get_request, methods=["GET"]),
        Route("/admin/stats", stats_api.get_stats, methods=["GET"]),
        Route("/admin/handoffs", handoffs_api.list_handoffs, methods=["GET"]),
        Route("/admin/handoffs", handoffs_api.create_handoff, methods=["POST"]),
        Route("/admin/handoffs/{handoff_id}", handoffs_api.get_handoff, methods=["GET"]),
        Route("/admin/handoffs/{handoff_id}", handoffs_api.update_handoff, methods=["POST"]),
        Route("/readyz", readyz, methods=["GET"]),
        *tools_api.routes(),
        *ui.routes(),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            PorticoError: errors.portico_error,
            HTTPException: errors.http_error,
        },
    )
    app.state.runtime = runtime
    app.add_middleware(RequestIdMiddleware)
    return app


def app_from_env() -> Starlette:
    """Factory for ``uvicorn --factory`` worker processes: the CLI passes the config path in PORTICO_CONFIG."""
    cfg = load_config(config_path_from_env())
    setup_logging(cfg.logging.level, cfg.logging.json_lines)
    return create_app(cfg)
