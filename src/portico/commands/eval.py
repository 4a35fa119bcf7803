"""``portico eval``: run an eval (``run``) and build datasets from production traces (``dataset from-traces``).

Exit codes of ``run``: 0 done and every gate passed, 1 a gate failed, 2 a usage or config error, 3 stopped before
every cell ran (``--stop-after``; run it again to resume).
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from portico.config import ConfigError, PorticoConfig, load_config

eval_app = typer.Typer(no_args_is_help=True, help="Evaluate: datasets from traces, eval runs with gates.")
dataset_app = typer.Typer(no_args_is_help=True, help="Eval datasets.")
eval_app.add_typer(dataset_app, name="dataset")
err = Console(stderr=True, soft_wrap=True)  # paths and run ids stay on one line

ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="Portico config (default: embedded setup)")]
UrlOpt = Annotated[str | None, typer.Option("--url", help="A running Portico instead of an in-process runtime")]
MasterOpt = Annotated[str | None, typer.Option("--master-key", envvar="PORTICO_MASTER_KEY", help="Admin key")]
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _fail(msg: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {msg}", highlight=False)
    return typer.Exit(code)


def _load(path: str | None) -> PorticoConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        raise _fail(str(e)) from None


def since_epoch(value: str | None, now: float | None = None) -> float | None:
    """``7d`` / ``24h`` / ``30m`` ago, an ISO time, or epoch seconds."""
    if not value:
        return None
    m = _DURATION.match(value.strip())
    if m:
        return (now or time.time()) - float(m.group(1)) * _UNITS[m.group(2)]
    from portico.protocol.errors import InvalidRequest
    from portico.server.admin import parse_when  # the admin API's own parser: ISO 8601 or epoch seconds

    try:
        return parse_when(value, "since")
    except InvalidRequest:
        raise _fail(f"--since: use 7d, 24h, 30m, an ISO time or epoch seconds, not {value!r}") from None


@eval_app.command("run")
def run(
    spec_path: Annotated[str, typer.Argument(metavar="EVAL.yaml", help="The eval: dataset, variants, scorers, gates")],
    config: ConfigOpt = None,
    url: UrlOpt = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="PORTICO_API_KEY", help="Key for --url")] = None,
    master_key: MasterOpt = None,
    db: Annotated[str | None, typer.Option("--db", help="Results database (default: the config's storage)")] = None,
    out_dir: Annotated[str | None, typer.Option("--out", help="Report directory (<state_dir>/evals/<run>)")] = None,
    new: Annotated[bool, typer.Option("--new", help="Start a new run even if an unfinished one matches")] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show the progress bar")] = True,
    stop_after: Annotated[int | None, typer.Option("--stop-after", hidden=True)] = None,
) -> None:
    """Run an eval through the real pipeline; write results to the database and an HTML + markdown report."""
    from portico.evaluation.spec import SpecError, load_spec

    try:
        spec, base = load_spec(spec_path)
    except SpecError as e:
        raise _fail(str(e)) from None
    cfg = _load(config)
    from portico.storage.migrate import SchemaError

    try:
        code = asyncio.run(_run(spec, base, cfg, url, api_key, master_key, db, out_dir, new, progress, stop_after))
    except SchemaError as e:  # the results database is behind: `portico db upgrade`, as for serve
        raise _fail(str(e)) from None
    raise typer.Exit(code)


async def _run(spec: Any, base: Path, cfg: PorticoConfig, url: str | None, api_key: str | None,
               master_key: str | None, db_url: str | None, out_dir: str | None, new: bool, show: bool,
               stop_after: int | None) -> int:  # fmt: skip
    from portico.commands.eval_targets import HttpTarget, InProcessTarget, TargetError
    from portico.evaluation.runner import EvalError, EvalRunner
    from portico.runtime import Runtime
    from portico.storage.db import Database

    rt = None
    if url:
        db = Database(db_url or cfg.storage_url)
        await db.create_schema()
        target: Any = HttpTarget(url, api_key, master_key, spec.timeout_seconds)
    else:
        try:
            rt = Runtime(cfg)
        except ValueError as e:
            err.print(f"[red]error:[/red] {e}", highlight=False)
            return 2
        await rt.start()
        db = Database(db_url) if db_url else rt.db
        if db_url:
            await db.create_schema()
        target = InProcessTarget(rt)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TimeRemainingColumn(), console=err, disable=not show, transient=False)  # fmt: skip
    task = bar.add_task(spec.name, total=None)
    try:
        runner = EvalRunner(spec, target, db)
        with bar:
            result = await runner.run(base, new=new, max_cells=stop_after,
                                      progress=lambda d, t: bar.update(task, completed=d, total=t))  # fmt: skip
    except (EvalError, TargetError, ValueError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        return 2
    finally:
        await target.close()
        if db_url or url:
            await db.close()
        if rt is not None:
            await rt.close()
    verb = "resumed" if result.resumed else "started"
    if not result.summary:
        err.print(f"run {result.run_id} ({verb}) stopped after {result.ran} new cells; run again to resume")
        return 3
    from portico.evaluation.report import render_html, render_markdown

    run_row = {"run_id": result.run_id, "name": spec.name}
    where = Path(out_dir) if out_dir else Path(cfg.state_dir) / "evals" / result.run_id
    where.mkdir(parents=True, exist_ok=True)
    (where / "report.html").write_text(render_html(run_row, result.summary), encoding="utf-8")
    md = render_markdown(run_row, result.summary)
    (where / "report.md").write_text(md, encoding="utf-8")
    typer.echo(md)
    err.print(f"run {result.run_id} ({verb}, {result.ran} cells run) · report: {where / 'report.html'}",
              highlight=False)  # fmt: skip
    if result.failed_gates:
        for g in result.failed_gates:
            err.print(f"[red]gate failed:[/red] {g['scorer']} on {g['variant']}: {'; '.join(g['reasons'])}",
                      highlight=False)  # fmt: skip
        return 1
    return 0


@dataset_app.command("from-traces")
def from_traces(
    out_path: Annotated[str, typer.Option("--out", help="JSONL file to write")],
    app_name: Annotated[str | None, typer.Option("--app", help="Only this application's requests")] = None,
    since: Annotated[str | None, typer.Option(help="7d, 24h, an ISO time or epoch seconds")] = None,
    until: Annotated[str | None, typer.Option(help="Same forms as --since")] = None,
    with_feedback: Annotated[bool, typer.Option("--with-feedback", help="Only requests that got feedback")] = False,
    limit: Annotated[int, typer.Option(min=1, help="At most this many items")] = 1000,
    name: Annotated[str | None, typer.Option(help="Also register it in the database under this name")] = None,
    url: UrlOpt = None,
    master_key: MasterOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Build an eval dataset from stored traces (prompt, corrected or approved answer, feedback as tags)."""
    body = {"application": app_name, "since": since_epoch(since), "until": since_epoch(until),
            "with_feedback": with_feedback, "limit": limit, "name": name}  # fmt: skip
    if url:
        headers = {"authorization": f"Bearer {master_key}"} if master_key else {}
        try:
            r = httpx.post(url.rstrip("/") + "/admin/datasets/from-traces", json=body, headers=headers, timeout=120)
        except httpx.HTTPError as e:
            raise _fail(f"cannot reach Portico at {url}: {e}", 1) from None
        if r.status_code != 200:
            raise _fail(f"{r.status_code}: {r.text[:500]}", 1)
        result = r.json()
    else:
        from portico.storage.migrate import SchemaError

        try:
            result = asyncio.run(_from_db(_load(config), body))
        except SchemaError as e:
            raise _fail(str(e)) from None
    lines = b"".join(orjson.dumps(item) + b"\n" for item in result["data"])
    Path(out_path).write_bytes(lines)
    registered = f" · registered as {result['name']} v{result['version']}" if result.get("version") else ""
    err.print(f"{len(result['data'])} items → {out_path}{registered}", highlight=False)


async def _from_db(cfg: PorticoConfig, body: dict[str, Any]) -> dict[str, Any]:
    from portico.evaluation.datasets import build_from_traces
    from portico.storage.db import Database

    db = Database(cfg.storage_url)
    try:
        await db.create_schema()
        return await build_from_traces(db, **body)
    finally:
        await db.close()
