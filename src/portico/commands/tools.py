"""``portico tools …``: list the configured tools and try one outside a model run, in-process.

``call`` builds the tools from the config exactly as the server does and runs the tool through ``run_tool``: the
arguments are validated against its schema and a write tool meets the same gate (it becomes a pending action in
the approval queue, as when a model asks for it); the call is audited like every other.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Annotated, Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from portico.actions.describe import describe
from portico.actions.execute import run_tool
from portico.actions.tool import ToolContext
from portico.cli_config import load_for_cli
from portico.config import PorticoConfig

tools_app = typer.Typer(no_args_is_help=True, help="Tools agent steps may call: list them, try one.")
err = Console(stderr=True)

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config file")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


_load = load_for_cli  # the main CLI's loader: its error message, its exit code


def _runtime(cfg: PorticoConfig) -> Any:
    from portico.runtime import Runtime  # the composition root; imported late (it pulls in every component)

    try:
        return Runtime(cfg)
    except ValueError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None


@tools_app.command("list")
def list_tools(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """The configured tools: kind, write flag, parameters and the health of their sources."""
    view = asyncio.run(_list(_runtime(_load(config))))
    if as_json:
        sys.stdout.write(orjson.dumps(view, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table("name", "kind", "source", "write", "timeout", "parameters", "description")
    for t in view["data"]:
        params = ", ".join((t["parameters"].get("properties") or {}).keys())
        table.add_row(t["name"], t["kind"], t["source"], "yes" if t["write"] else "no", f"{t['timeout']:g}s", params,
                      t["description"])  # fmt: skip
    Console().print(table)
    for s in view["sources"]:
        if s["health"].get("status") != "ok":
            err.print(f"[yellow]{s['name']}[/yellow] ({s['kind']}): {s['health']}", highlight=False)


async def _list(rt: Any) -> dict[str, Any]:
    await rt.tools.start()
    try:
        return describe(rt.tools)
    finally:
        await rt.tools.close()


@tools_app.command("call")
def call_tool(
    name: Annotated[str, typer.Argument(help="Tool name")],
    arguments: Annotated[str, typer.Argument(help="Arguments as a JSON object")] = "{}",
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run one tool with these arguments and print its result (exit code 1 when the call did not succeed)."""
    code = asyncio.run(_call(_runtime(_load(config)), name, arguments, as_json))
    raise typer.Exit(code)


async def _call(rt: Any, name: str, arguments: str, as_json: bool) -> int:
    await rt.start()  # tools, and the models a tool may need (the embedder of a knowledge search)
    try:
        tool = rt.tools.get(name)
        if tool is None:
            known = ", ".join(t.name for t in rt.tools.all()) or "none"
            err.print(f"[red]error:[/red] no tool named '{name}' (tools: {known})", highlight=False)
            return 2
        ctx = ToolContext(request_id=f"cli-{uuid.uuid4().hex[:12]}", caller={"key": "cli"})
        out = await run_tool(tool, arguments, ctx, rt.tools.gate)
        record = getattr(rt.tools.gate, "record_call", None)  # the approval queue audits every call
        if record is not None:
            await record(out, ctx, "cli")
        r = out.result
        if as_json:
            view = {"tool": out.tool, "status": out.status, "duration_ms": round(out.duration * 1000, 3),
                    "content": r.content, "data": r.data, "citations": r.citations, "cost_usd": r.cost}  # fmt: skip
            sys.stdout.write(orjson.dumps(view, option=orjson.OPT_INDENT_2, default=str).decode() + "\n")
        else:
            err.print(f"{out.tool}: {out.status} in {out.duration * 1000:.1f} ms", highlight=False)
            sys.stdout.write(r.content + "\n")
        return 0 if out.status == "ok" else 1
    finally:
        await rt.close()
