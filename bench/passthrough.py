"""The ceiling for bench/gateway.py: the least a Python gateway can do. An aiohttp server (uvloop) that forwards each
POST body unchanged to the same path on the upstream through one pooled ClientSession and returns the answer; SSE
answers are relayed chunk by chunk as they arrive. No parsing, no auth, no logging.

    python bench/passthrough.py --port 9000 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
import uvloop
from aiohttp import web

UPSTREAM = web.AppKey("upstream", str)
SESSION = web.AppKey("session", aiohttp.ClientSession)
FORWARDED = ("Content-Type", "Authorization")


async def relay_stream(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, headers={"Content-Type": upstream.content_type})
    await response.prepare(request)
    async for chunk in upstream.content.iter_any():
        await response.write(chunk)
    await response.write_eof()
    return response


async def forward(request: web.Request) -> web.StreamResponse:
    headers = {h: request.headers[h] for h in FORWARDED if h in request.headers}
    url = request.app[UPSTREAM] + request.path
    async with request.app[SESSION].post(url, data=await request.read(), headers=headers) as upstream:
        if upstream.content_type == "text/event-stream":
            return await relay_stream(request, upstream)
        body = await upstream.read()
        return web.Response(status=upstream.status, body=body, headers={"Content-Type": upstream.content_type})


async def health(_: web.Request) -> web.Response:
    return web.Response(text="ok")


async def client_session(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        app[SESSION] = session
        yield


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    app[UPSTREAM] = upstream.rstrip("/")
    app.cleanup_ctx.append(client_session)
    app.router.add_get("/health", health)
    app.router.add_post("/{path:.*}", forward)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8000")
    args = parser.parse_args()
    web.run_app(make_app(args.upstream), host="127.0.0.1", port=args.port, access_log=None, print=None,
                loop=uvloop.new_event_loop())


if __name__ == "__main__":
    main()
