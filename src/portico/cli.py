"""The ``portico`` command: serve, models, chat, keys, usage, router."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from portico.cache.cli import cache_app
from portico.cli_config import load_for_cli
from portico.commands.db import db_app, prepare_for_serve
from portico.commands.eval import eval_app
from portico.commands.pipeline import pipeline_app
from portico.commands.router import register as register_router
from portico.commands.sql import sql_app
from portico.commands.tools import tools_app
from portico.config import PorticoConfig
from portico.context.knowledge.ingest_cli import ingest

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="Portico: one OpenAI-compatible endpoint for every model."
)
err = Console(stderr=True)

ConfigOpt = Annotated[
    str | None, typer.Option("--config", "-c", help="YAML config file (default: embedded local setup)")
]


_load = load_for_cli


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
    from portico.observability.logging import setup_logging
    from portico.observability.metrics import multiprocess_dir
    from portico.runtime import Runtime

    cfg = _load(config)
    host = host or cfg.server.host
    port = cfg.server.port if port is None else port
    workers = workers or cfg.server.workers
    if cfg.auth.master_key is None and not is_loopback(host):
        err.print(
            f"[red]error:[/red] refusing to bind {host} without a master key: anyone who can reach it could "
            "use every model. Set auth.master_key in the config or PORTICO_MASTER_KEY.",
            highlight=False,
        )
        raise typer.Exit(2)
    if workers > 1 and cfg.state == "memory":
        err.print(
            "[red]error:[/red] --workers > 1 needs shared state for limits and budgets: set "
            "state: redis://127.0.0.1:6379/0 in the config.",
            highlight=False,
        )
        raise typer.Exit(2)
    try:
        Runtime(cfg)  # builds every pipeline: step errors surface here, before binding a port
    except ValueError as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    prepare_for_serve(cfg.storage_url)  # schema at head (an empty database gets it), else exit: `portico db upgrade`
    setup_logging(cfg.logging.level, cfg.logging.json_lines)
    if config:
        os.environ["PORTICO_CONFIG"] = os.path.abspath(config)
    else:
        os.environ.pop("PORTICO_CONFIG", None)
    err.print(f"Portico serving {len(cfg.models)} model(s) on http://{host}:{port}  (workers: {workers})")
    with multiprocess_dir(workers) as metrics_dir:
        if metrics_dir is not None:
            err.print(f"Metrics of all workers are merged through {metrics_dir}", highlight=False)
        _raise_fd_limit()
        from portico.server.supervisor import serve as run_server

        # graceful SIGTERM (server/supervisor.py), header and write timeouts against slow clients (http_protocol.py)
        run_server(host, port, workers, cfg.server.drain_seconds, header_timeout=cfg.server.header_timeout,
                   write_timeout=cfg.server.write_timeout)  # fmt: skip


def _raise_fd_limit() -> None:
    """Every open connection is a file descriptor: take the hard limit, not the usual soft 1024."""
    import contextlib
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < want:
        with contextlib.suppress(ValueError, OSError):  # a kernel cap below the hard limit: keep what we have
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@app.command()
def models(config: ConfigOpt = None) -> None:
    """List the models and applications the config serves."""
    cfg = _load(config)
    table = Table("name", "type", "deployments", "fallbacks")
    for m in cfg.models:
        deps = ", ".join(d.label for d in m.deployments)
        table.add_row(m.name, m.type, deps, ", ".join(m.fallbacks))
    for a in cfg.applications:
        table.add_row(a.name, "application", f"→ {a.model}",
                      ", ".join(s.use or next(iter(s.model_extra or {}), "?") for s in a.steps))  # fmt: skip
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


keys_app = typer.Typer(no_args_is_help=True, help="Virtual keys (through a running Portico's admin API).")
app.add_typer(keys_app, name="keys")

UrlOpt = Annotated[str, typer.Option("--url", help="Portico's base URL")]
MasterOpt = Annotated[str | None, typer.Option("--master-key", envvar="PORTICO_MASTER_KEY", help="Admin key")]


def _admin(method: str, url: str, path: str, master_key: str | None, **kw: object) -> dict:
    import httpx

    headers = {"authorization": f"Bearer {master_key}"} if master_key else {}
    try:
        r = httpx.request(method, url.rstrip("/") + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]
    except httpx.HTTPError as e:
        err.print(f"[red]error:[/red] cannot reach Portico at {url}: {e}", highlight=False)
        raise typer.Exit(1) from None
    if r.status_code >= 400:
        msg = (
            r.json().get("error", {}).get("message", r.text)
            if r.headers.get("content-type", "").startswith("application/json")
            else r.text
        )
        err.print(f"[red]error {r.status_code}:[/red] {msg}", highlight=False)
        raise typer.Exit(1)
    return r.json()


def _key_table(rows: list[dict]) -> Table:
    t = Table("id", "name", "prefix", "models", "rpm", "tpm", "budget", "active")
    for k in rows:
        budget = f"{k['budget_usd']} / {k['budget_period']}" if k.get("budget_usd") is not None else ""
        t.add_row(
            k["id"],
            k["name"],
            k["prefix"] + "…",
            ", ".join(k["models"]) if k["models"] else "all",
            str(k["rpm"] or ""),
            str(k["tpm"] or ""),
            budget,
            "yes" if k["active"] else "revoked",
        )
    return t


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option("--name", help="Who the key is for")],
    models: Annotated[
        str | None, typer.Option(help="Comma-separated models/applications it may use (default all)")
    ] = None,
    rpm: Annotated[int | None, typer.Option(help="Requests per minute")] = None,
    tpm: Annotated[int | None, typer.Option(help="Tokens per minute")] = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="Spend limit in USD")] = None,
    budget_period: Annotated[str, typer.Option("--budget-period", help="day | month | total")] = "total",
    tools: Annotated[
        str | None, typer.Option(help="Comma-separated tools or globs it may call (default: read-only tools only)")
    ] = None,
    url: UrlOpt = "http://127.0.0.1:8080",
    master_key: MasterOpt = None,
) -> None:
    """Create a key. The key is printed once; Portico stores only its hash."""
    body: dict = {"name": name, "rpm": rpm, "tpm": tpm, "budget_usd": budget_usd}
    if models:
        body["models"] = [m.strip() for m in models.split(",") if m.strip()]
    if tools:
        body["tools"] = [t.strip() for t in tools.split(",") if t.strip()]
    if budget_usd is not None:
        body["budget_period"] = budget_period
    out = _admin("POST", url, "/admin/keys", master_key, json={k: v for k, v in body.items() if v is not None})
    Console().print(_key_table([out]))
    Console().print(f"key (shown once): [bold]{out['key']}[/bold]")


@keys_app.command("list")
def keys_list(url: UrlOpt = "http://127.0.0.1:8080", master_key: MasterOpt = None) -> None:
    """List keys (never the keys themselves)."""
    Console().print(_key_table(_admin("GET", url, "/admin/keys", master_key)["data"]))


@keys_app.command("revoke")
def keys_revoke(key_id: str, url: UrlOpt = "http://127.0.0.1:8080", master_key: MasterOpt = None) -> None:
    """Revoke a key; it stops working at once."""
    Console().print(_key_table([_admin("DELETE", url, f"/admin/keys/{key_id}", master_key)]))


@keys_app.command("update")
def keys_update(
    key_id: str,
    name: Annotated[str | None, typer.Option()] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated; 'all' for every model")] = None,
    rpm: Annotated[int | None, typer.Option()] = None,
    tpm: Annotated[int | None, typer.Option()] = None,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd")] = None,
    budget_period: Annotated[str | None, typer.Option("--budget-period")] = None,
    tools: Annotated[str | None, typer.Option(help="Comma-separated tools/globs; 'read-only' for the default")] = None,
    url: UrlOpt = "http://127.0.0.1:8080",
    master_key: MasterOpt = None,
) -> None:
    """Change a key's name, models, tools, limits or budget."""
    body: dict = {
        k: v
        for k, v in {
            "name": name,
            "rpm": rpm,
            "tpm": tpm,
            "budget_usd": budget_usd,
            "budget_period": budget_period,
        }.items()
        if v is not None
    }
    if models is not None:
        body["models"] = None if models == "all" else [m.strip() for m in models.split(",") if m.strip()]
    if tools is not None:
        body["tools"] = None if tools == "read-only" else [t.strip() for t in tools.split(",") if t.strip()]
    Console().print(_key_table([_admin("PATCH", url, f"/admin/keys/{key_id}", master_key, json=body)]))


approvals_app = typer.Typer(no_args_is_help=True, help="Write actions waiting for a human (a running Portico).")
app.add_typer(approvals_app, name="approvals")


@approvals_app.command("list")
def approvals_list(
    status: Annotated[str | None, typer.Option(help="pending, approved, denied, expired, executed, failed, …")] = None,
    url: UrlOpt = "http://127.0.0.1:8080",
    master_key: MasterOpt = None,
) -> None:
    """List actions (newest first)."""
    rows = _admin("GET", url, "/admin/approvals", master_key, params={"status": status} if status else {})["data"]
    t = Table("id", "tool", "status", "asked by", "created", "arguments")
    for a in rows:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(a["created_at"]))
        t.add_row(a["id"], a["tool"], a["status"], a["key_name"] or "", created, json.dumps(a["arguments"])[:80])
    Console().print(t)


@approvals_app.command("show")
def approvals_show(approval_id: str, url: UrlOpt = "http://127.0.0.1:8080", master_key: MasterOpt = None) -> None:
    """One action with its conversation excerpt, result and audit trail (JSON)."""
    print(json.dumps(_admin("GET", url, f"/admin/approvals/{approval_id}", master_key), indent=2))


@approvals_app.command("approve")
def approvals_approve(
    approval_id: str,
    arguments: Annotated[str | None, typer.Option(help="Edited arguments as a JSON object")] = None,
    by: Annotated[str, typer.Option(help="Who approves (recorded in the audit log)")] = "operator",
    url: UrlOpt = "http://127.0.0.1:8080",
    master_key: MasterOpt = None,
) -> None:
    """Approve: the tool runs once, now; prints the result."""
    body: dict = {"by": by}
    if arguments is not None:
        body["arguments"] = json.loads(arguments)
    out = _admin("POST", url, f"/admin/approvals/{approval_id}/approve", master_key, json=body)
    Console().print(f"{out['id']}: {out['status']}")
    print((out.get("result") or {}).get("content", ""))


@approvals_app.command("deny")
def approvals_deny(
    approval_id: str,
    reason: Annotated[str | None, typer.Option(help="Why (shown to the model and in the audit)")] = None,
    by: Annotated[str, typer.Option(help="Who denies")] = "operator",
    url: UrlOpt = "http://127.0.0.1:8080",
    master_key: MasterOpt = None,
) -> None:
    """Deny: the tool never runs."""
    out = _admin("POST", url, f"/admin/approvals/{approval_id}/deny", master_key, json={"reason": reason, "by": by})
    Console().print(f"{out['id']}: {out['status']}")


@app.command()
def usage(
    group_by: Annotated[
        str, typer.Option("--group-by", help="key, model, day, deployment, application, status")
    ] = "key,model",
    since: Annotated[str | None, typer.Option(help="ISO time or epoch seconds")] = None,
    url: UrlOpt = "http://127.0.0.1:8080",
    master_key: MasterOpt = None,
) -> None:
    """Requests, tokens and cost, grouped."""
    params = {"group_by": group_by, **({"since": since} if since else {})}
    data = _admin("GET", url, "/admin/usage", master_key, params=params)
    groups = data["group_by"]
    t = Table(*groups, "requests", "errors", "prompt tok", "completion tok", "cost USD", "avg ms")
    for r in data["data"]:
        t.add_row(
            *(str(r[g]) for g in groups),
            str(r["requests"]),
            str(r["errors"]),
            str(r["prompt_tokens"]),
            str(r["completion_tokens"]),
            f"{r['cost_usd']:.6f}",
            f"{r['avg_latency_ms']:.1f}",
        )
    Console().print(t)


app.add_typer(cache_app, name="cache")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(eval_app, name="eval")
app.add_typer(sql_app, name="sql")
app.add_typer(tools_app, name="tools")
app.add_typer(db_app, name="db")
app.command("ingest")(ingest)

router_app = typer.Typer(no_args_is_help=True, help="Preference router: train from pairwise data, calibrate.")
app.add_typer(router_app, name="router")
RouterDirOpt = Annotated[str, typer.Option("--out", "--dir", help="Directory of trained routers")]


@router_app.command("train")
def router_train(
    data: Annotated[
        str | None, typer.Argument(help="JSONL: prompt, model_a, model_b, winner (model_a | model_b | tie)")
    ] = None,
    name: Annotated[str, typer.Option(help="Router name; each training run writes its next version")] = "default",
    out: RouterDirOpt = ".portico/routers",
    strong: Annotated[str | None, typer.Option(help="Strong model of the pair (default: highest rated)")] = None,
    weak: Annotated[str | None, typer.Option(help="Weak model of the pair (default: lowest rated)")] = None,
    domain_correction_min: Annotated[
        int | None,
        typer.Option(
            "--domain-correction-min",
            min=0,
            help="A domain with at least this many prompts gets its own score correction when it helps by CV "
            "(default: the router's, 100; 0: off)",
        ),
    ] = None,
    from_feedback: Annotated[
        bool, typer.Option("--from-feedback", help="Learn from stored feedback; gate; promote")
    ] = False,
    config: ConfigOpt = None,
    metric: Annotated[str | None, typer.Option(help="--from-feedback: the feedback metric")] = None,
    app_name: Annotated[str | None, typer.Option("--app", help="--from-feedback: one application's feedback")] = None,
    alpha: Annotated[float, typer.Option(help="--from-feedback: the shadow gate's significance")] = 0.05,
    holdout: Annotated[float, typer.Option(help="--from-feedback: share of labels held out for the gate")] = 0.2,
    promote: Annotated[bool, typer.Option(help="--from-feedback: promote when the gate passes")] = True,
) -> None:
    """Train a preference router (Bradley-Terry + prompt-aware predictor) on the packaged MiniLM embeddings."""
    if from_feedback:
        from portico.commands.router import train_from_feedback

        root = None if out == ".portico/routers" else out  # the default: the config step's dir
        return train_from_feedback(config, None if name == "default" else name, root, metric, app_name, alpha,
                                   holdout, promote)  # fmt: skip
    if data is None:
        err.print("[red]error:[/red] give a JSONL file of pairwise records, or --from-feedback", highlight=False)
        raise typer.Exit(2)
    from portico.routing.datafiles import load_pairwise
    from portico.routing.local_embed import EMBEDDER_NAME, local_embed_fn
    from portico.routing.preference import TrainConfig, train
    from portico.routing.store import save

    try:
        records = load_pairwise(data)
        config = (
            TrainConfig() if domain_correction_min is None else TrainConfig(domain_correction_min=domain_correction_min)
        )
        model = train(records, local_embed_fn(), strong=strong, weak=weak, config=config)
    except (OSError, ValueError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    model.info["embedder"] = EMBEDDER_NAME
    path = save(model, out, name)
    t = Table("model", "Bradley-Terry rating")
    for m, r in sorted(zip(model.models, model.ratings, strict=True), key=lambda x: -x[1]):
        t.add_row(m, f"{r:+.3f}")
    Console().print(t)
    Console().print(
        f"trained on {len(records)} records ({model.info['prompts']} prompts): strong={model.strong} "
        f"weak={model.weak}; saved {path}",
        highlight=False,
    )


register_router(router_app)  # versions, promote, rollback


@router_app.command("calibrate")
def router_calibrate(
    prompts: Annotated[str, typer.Argument(help="JSONL of typical prompts: strings, {prompt[, domain]} or {messages}")],
    name: Annotated[str, typer.Option(help="Router name")] = "default",
    strong_share: Annotated[float, typer.Option("--strong-share", help="Target share of strong-model calls")] = 0.3,
    out: RouterDirOpt = ".portico/routers",
    version: Annotated[int | None, typer.Option(help="Router version (default: latest)")] = None,
) -> None:
    """Pick the threshold that sends --strong-share of these prompts to the strong model; stored with the router."""
    from portico.routing.calibration import strong_share as share_of
    from portico.routing.calibration import threshold_for_share
    from portico.routing.datafiles import load_prompts_with_domains
    from portico.routing.local_embed import local_embed_fn
    from portico.routing.store import load, save_threshold

    try:
        model = load(out, name, version)
        texts, domains = load_prompts_with_domains(prompts)  # a row's "domain": as route_preference will pass it
        p = model.p_strong_wins_batch(local_embed_fn()(texts), texts, domains)
        threshold = threshold_for_share(p, strong_share)
    except (OSError, ValueError) as e:
        err.print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
    path = save_threshold(out, name, strong_share, threshold, len(texts), model.info["version"])
    Console().print(
        f"threshold {threshold:.6f} sends {share_of(p, threshold):.1%} of {len(texts)} prompts to "
        f"{model.strong}; saved {path}",
        highlight=False,
    )


def main() -> None:
    app()
