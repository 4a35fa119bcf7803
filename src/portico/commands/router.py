"""``portico router train --from-feedback | promote | rollback | versions``: the flywheel from the command line.

The router's name, directory, pair and feedback metric default to the config's ``route_preference`` step, so
``portico router train --from-feedback -c portico.yaml`` needs nothing else when one application routes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from portico.cli_config import load_for_cli
from portico.config import PorticoConfig

out = Console()
err = Console(stderr=True)
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config file (as for serve)")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Router name (default: the config's route_preference)")]
DEFAULT_ROOT = ".portico/routers"  # as routing.store's (not imported: numpy loads only when a command runs)
DirOpt = Annotated[str | None, typer.Option("--dir", "--out", help="Directory of trained routers")]


def _fail(msg: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/red] {msg}", highlight=False)
    return typer.Exit(code)


@dataclass
class Target:
    name: str
    root: str
    metric: str | None
    strong: str | None
    weak: str | None


def _steps(cfg: PorticoConfig) -> list[dict[str, Any]]:
    found = []
    for app in cfg.applications:
        for step in app.steps:
            if step.use == "route_preference":
                found.append(step.model_dump())
    return found


def resolve(cfg: PorticoConfig | None, name: str | None, root: str | None, metric: str | None) -> Target:
    """The router to work on: explicit options first, then the config's route_preference step."""
    steps = _steps(cfg) if cfg is not None else []
    if name is not None:
        steps = [s for s in steps if s.get("router") == name]
    step = steps[0] if len({s.get("router") for s in steps}) == 1 else {}
    name = name or step.get("router")
    if name is None:
        raise _fail("which router? give --name, or a config (-c) with one route_preference step")
    if metric is None:
        metric = step.get("feedback_metric")
    if metric is None and cfg is not None:
        boolean = [m.name for m in cfg.metrics if m.type == "boolean"]
        metric = boolean[0] if len(boolean) == 1 else None
    return Target(name, root or step.get("dir") or DEFAULT_ROOT, metric, step.get("router_strong"),
                  step.get("router_weak"))  # fmt: skip


def train_from_feedback(config: str | None, name: str | None, root: str | None, metric: str | None,
                        application: str | None, alpha: float, holdout: float, promote: bool) -> None:  # fmt: skip
    from portico.routing.flywheel import Settings
    from portico.routing.local_embed import EMBEDDER_NAME, local_embed_fn
    from portico.routing.retrain import Busy, retrain
    from portico.routing.store import load

    cfg = load_for_cli(config)
    t = resolve(cfg, name, root, metric)
    if t.metric is None:
        raise _fail("which feedback metric? give --metric (a boolean metric of the config, or the pairwise one)")
    try:
        serving = load(t.root, t.name)
    except FileNotFoundError as e:
        raise _fail(f"{e}: train a first router from a file (`portico router train DATA.jsonl`)") from None
    strong, weak = t.strong or serving.strong, t.weak or serving.weak
    settings = Settings(alpha=alpha, holdout=holdout)

    async def go() -> Any:
        from portico.storage.db import Database

        db = Database(cfg.storage_url)
        try:
            await db.create_schema()
            return await retrain(db, root=t.root, name=t.name, metric=t.metric, strong=strong, weak=weak,
                                 embed_fn=local_embed_fn(), settings=settings, promote=promote,
                                 application=application, embedder=EMBEDDER_NAME)  # type: ignore[arg-type]  # fmt: skip
        finally:
            await db.close()

    try:
        cycle, kinds = asyncio.run(go())
    except Busy as e:
        raise _fail(str(e), 1) from None
    except ValueError as e:
        raise _fail(str(e)) from None
    out.print(f"labels: {kinds['boolean']} boolean, {kinds['pairwise']} pairwise on metric '{t.metric}'; "
              f"trained on {cycle.trained_on}", highlight=False)  # fmt: skip
    if cycle.candidate is None:
        out.print(f"no candidate: {cycle.reason}", highlight=False)
        raise typer.Exit(1)
    g = cycle.gate
    assert g is not None
    out.print(f"candidate v{cycle.candidate} vs serving v{cycle.serving}: held-out AUC {g.candidate_auc:.3f} vs "
              f"{g.serving_auc:.3f} on {g.holdout} labels (diff {g.diff:+.3f}, p={g.p_value:.3f})",
              highlight=False)  # fmt: skip
    verdict = f"promoted: v{cycle.candidate} now serves" if cycle.promoted else f"kept v{cycle.serving}"
    out.print(f"{verdict} ({cycle.reason})", highlight=False)


def register(router_app: typer.Typer) -> None:
    @router_app.command("versions")
    def versions_cmd(name: NameOpt = None, root: DirOpt = None, config: ConfigOpt = None) -> None:
        """The router's versions: which one serves, and each candidate's shadow-gate numbers."""
        from portico.routing.versions import table

        t = resolve(load_for_cli(config) if config else None, name, root, None)
        rows = table(t.root, t.name)
        if not rows:
            raise _fail(f"no trained router '{t.name}' under {t.root}")
        tab = Table("version", "serving", "source", "records", "gate (held-out AUC cand / serving, p)", "promoted")
        for r in rows:
            g = (r["gate"] or {}).get("gate")
            gate = f"{g['candidate_auc']:.3f} / {g['serving_auc']:.3f}, p={g['p_value']:.3f}" if g else ""
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["promoted_at"])) if r["promoted_at"] else ""
            tab.add_row(f"v{r['version']}", "●" if r["serving"] else "", str(r["source"]), str(r["records"]), gate,
                        when)  # fmt: skip
        out.print(tab)

    @router_app.command("promote")
    def promote_cmd(version: Annotated[int, typer.Argument(help="Version to serve")], name: NameOpt = None,
                    root: DirOpt = None, config: ConfigOpt = None) -> None:  # fmt: skip
        """Serve this version (by hand, without the gate); running servers follow within seconds."""
        from portico.routing.versions import promote

        t = resolve(load_for_cli(config) if config else None, name, root, None)
        try:
            promote(t.root, t.name, version, reason="manual")
        except FileNotFoundError as e:
            raise _fail(str(e)) from None
        out.print(f"router {t.name}: v{version} serves", highlight=False)

    @router_app.command("rollback")
    def rollback_cmd(to: Annotated[int | None, typer.Option("--to", help="Version (default: the previous)")] = None,
                     name: NameOpt = None, root: DirOpt = None, config: ConfigOpt = None) -> None:  # fmt: skip
        """Serve the version that served before the current one (or --to); running servers follow."""
        from portico.routing.versions import rollback

        t = resolve(load_for_cli(config) if config else None, name, root, None)
        try:
            v = rollback(t.root, t.name, to)
        except (FileNotFoundError, ValueError) as e:
            raise _fail(str(e)) from None
        out.print(f"router {t.name}: rolled back, v{v} serves", highlight=False)
