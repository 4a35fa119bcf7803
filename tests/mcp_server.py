"""A real MCP server for the tests and the agents benchmark, built with the official SDK (``MCPServer``, the SDK's
FastMCP). Run as a subprocess:

    python -m tests.mcp_server stdio
    python -m tests.mcp_server http --port 8123 [--token SECRET]

With ``--token``, HTTP requests without ``Authorization: Bearer SECRET`` get a 401 (to test per-server headers).
``MCP_TEST_LOG`` (a file path) records each tool call, one line each, so a test can count what really ran.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

server = MCPServer("orders")
STARTED = time.time()


def _log(line: str) -> None:
    path = os.environ.get("MCP_TEST_LOG")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
def add(a: int, b: int) -> int:
    """Add two integers."""
    _log(f"add {a} {b}")
    return a + b


@server.tool()
def lookup_order(order_id: str) -> dict:
    """Look up an order by its id."""
    _log(f"lookup_order {order_id}")
    return {"order_id": order_id, "status": "shipped", "pid": os.getpid()}


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
def cancel_order(order_id: str) -> str:
    """Cancel an order (changes data)."""
    _log(f"cancel_order {order_id}")
    return f"order {order_id} cancelled"


@server.tool()
def fail(reason: str) -> str:
    """Always fails with the given reason."""
    raise ToolError(reason)


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleep, then answer (to test timeouts and a server killed mid-call)."""
    _log(f"sleep {seconds}")
    await asyncio.sleep(seconds)
    return "woke up"


@server.tool()
def pid() -> int:
    """The server process id (tells a restarted server from the old one)."""
    return os.getpid()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("transport", choices=["stdio", "http"])
    p.add_argument("--port", type=int, default=8123)
    p.add_argument("--token", default=None)
    a = p.parse_args()
    if a.transport == "stdio":
        server.run("stdio")
        return
    import uvicorn
    from starlette.responses import JSONResponse

    mcp_app = server.streamable_http_app()

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            if scope["path"] == "/health":
                await JSONResponse({"status": "ok"})(scope, receive, send)
                return
            auth = dict(scope["headers"]).get(b"authorization", b"").decode()
            if a.token and auth != f"Bearer {a.token}":
                await JSONResponse({"error": "unauthorized"}, status_code=401)(scope, receive, send)
                return
        await mcp_app(scope, receive, send)

    uvicorn.run(app, host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()
