"""``GET /openapi.json`` (OpenAPI 3.1, built from the route declarations in ``catalog.py``) and ``GET /docs`` (a
self-contained page that renders it: no CDN, nothing fetched but the document itself)."""

from __future__ import annotations

from collections.abc import Iterable
from importlib.resources import files

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from portico import __version__
from portico.server.openapi.catalog import OPS
from portico.server.openapi.registry import Example, Op, build_spec

__all__ = ["OPS", "Example", "Op", "openapi_document", "routes"]

DESCRIPTION = (
    "Portico: one OpenAI-compatible endpoint in front of every model. Every error has OpenAI's shape "
    "(`ErrorResponse`), except on `/v1/messages` (Anthropic's, `AnthropicError`) and `/mcp` (JSON-RPC). "
    "Send a virtual key (or the master key) as a bearer token or `x-api-key`; "
    "`/admin` and `/metrics` need the master key when one is configured."
)


def openapi_document(extra: Iterable[Op] = ()) -> dict:
    """The document for the routes in ``catalog.OPS`` plus ``extra`` (routes declared elsewhere)."""
    return build_spec([*OPS, *extra], title="Portico", version=__version__, description=DESCRIPTION)


def routes(extra: Iterable[Op] = ()) -> list[Route]:
    # Built once per app: the document and the page are static for the process's life.
    spec = orjson.dumps(openapi_document(extra))
    page = files(__package__).joinpath("docs.html").read_bytes()

    async def openapi_json(request: Request) -> Response:
        return Response(spec, media_type="application/json")

    async def docs(request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8")

    return [
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
    ]
