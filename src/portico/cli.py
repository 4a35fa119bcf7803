"""The ``portico`` command: serve, models, chat."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from portico.config import ConfigError, PorticoConfig, load_config

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Portico: one OpenAI-compatible endpoint for every model."
)
err = Console(stderr=True)

ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML config file (default: embedded local setup)")
]


def _load(path: str | None) -> PorticoConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from config: 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config: 8080)")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default from config: 1)")] = None,
) -> None:
    """Start the HTTP server."""
    import uvicorn

    from portico.observability.logging import setup_logging
    from portico.runtime import Runtime

    cfg = _load(config)
    host = host or cfg.server.host
    port = cfg.server.port if port is None else port
    workers = workers or cfg.server.workers
    try:
        Runtime(cfg)  # builds every pipeline: step errors surface here, before binding a port
    except ValueError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    setup_logging(cfg.logging.level, cfg.logging.json_lines)
    if config:
        os.environ["PORTICO_CONFIG"] = os.path.abspath(config)
    else:
        os.environ.pop("PORTICO_CONFIG", None)
    err.print(f"Portico serving {len(cfg.models)} model(s) on http://{host}:{port}  (workers: {workers})")
    uvicorn.run(
        "portico.server.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=30,
    )


@app.command()
def models(config: ConfigOpt = None) -> None:
    """List the models and applications the config serves."""
    cfg = _load(config)
    table = Table("name", "type", "deployments", "fallbacks")
    for m in cfg.models:
        deps = ", ".join(d.label for d in m.deployments)
        table.add_row(m.name, m.type, deps, ", ".join(m.fallbacks))
    for a in cfg.applications:
        table.add_row(a.name, "application", f"→ {a.model}", ", ".join(s.use for s in a.steps))
    Console().print(table)


@app.command()
def chat(
    model: Annotated[str, typer.Argument(help="Model or application name")],
    prompt: Annotated[str, typer.Argument(help="The user message")],
    config: ConfigOpt = None,
    url: Annotated[
        str | None, typer.Option(help="Use a running Portico (e.g. http://127.0.0.1:8080) instead of in-process")
    ] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
) -> None:
    """Stream one answer to the terminal."""
    body: dict = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": True}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    if temperature is not None:
        body["temperature"] = temperature
    code = _chat_remote(url, body) if url else asyncio.run(_chat_local(_load(config), body))
    raise typer.Exit(code)


def _chat_remote(url: str, body: dict) -> int:
    import httpx
    import orjson

    with (
        httpx.Client(timeout=None) as client,
        client.stream("POST", url.rstrip("/") + "/v1/chat/completions", json=body) as resp,
    ):
        if resp.status_code >= 400:
            resp.read()
            err.print(f"[red]error {resp.status_code}:[/red] {resp.text}", highlight=False)
            return 1
        for line in resp.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunk = orjson.loads(line[6:])
                if "error" in chunk:
                    err.print(f"\n[red]error:[/red] {chunk['error'].get('message')}", highlight=False)
                    return 1
                _print_delta(chunk)
    sys.stdout.write("\n")
    return 0


async def _chat_local(cfg: PorticoConfig, body: dict) -> int:
    import uuid

    from portico.pipeline.context import RequestContext
    from portico.protocol.chat import ChatCompletionRequest
    from portico.protocol.errors import PorticoError
    from portico.runtime import Runtime

    rt = Runtime(cfg)
    await rt.start()
    try:
        req = ChatCompletionRequest.model_validate(body)
        pipeline, app_name = rt.pipeline_for(req.model)
        ctx = RequestContext(request=req, request_id=uuid.uuid4().hex, model=req.model, application=app_name)
        await pipeline.run(ctx)
        if ctx.stream is not None:
            async for chunk in ctx.stream:
                _print_delta(chunk)
        elif ctx.response is not None:
            sys.stdout.write(ctx.response["choices"][0]["message"].get("content") or "")
        sys.stdout.write("\n")
        return 0
    except PorticoError as e:
        err.print(f"[red]error {e.status}:[/red] {e.message}", highlight=False)
        return 1
    finally:
        await rt.close()


def _print_delta(chunk: dict) -> None:
    for c in chunk.get("choices", []):
        delta = c.get("delta") or {}
        if delta.get("content"):
            sys.stdout.write(delta["content"])
            sys.stdout.flush()
        for tc in delta.get("tool_calls") or []:
            fn = tc.get("function") or {}
            sys.stdout.write(f"{fn.get('name') or ''}{fn.get('arguments') or ''}")


def main() -> None:
    app()
