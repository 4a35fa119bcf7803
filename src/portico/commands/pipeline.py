"""``portico pipeline show APP``: an application's pipeline as a text tree, built exactly as ``serve`` builds it
(so a broken pipeline fails here too, with the same error): steps in run order, the implicit generate where it
goes, parallel groups, branch arms with their conditions, loops with their bound, calls with what they run, and
the closers that run last."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.tree import Tree

from portico.flow.graph import describe
from portico.pipeline import Pipeline, PipelineError

pipeline_app = typer.Typer(no_args_is_help=True, help="Application pipelines: show the steps, branches and loops.")


def _add(node: Tree, nodes: list[dict[str, Any]]) -> None:
    for n in nodes:
        kind = n["kind"]
        if kind == "parallel":
            _add(node.add("[bold]parallel[/bold]"), n["steps"])
        elif kind == "branch":
            b = node.add(f"[bold]branch[/bold] {escape(n['path'] or '')}")
            for arm in n["arms"]:
                head = arm["path"].rsplit(".", 1)[-1]
                cond = f" [cyan]{escape(arm['condition'])}[/cyan]" if arm["condition"] is not None else ""
                _add(b.add(f"{head}{cond}"), arm["steps"])
            if not n["has_else"]:
                b.add("[dim](no else: nothing runs when no condition holds)[/dim]")
        elif kind == "loop":
            until = f" until [cyan]{escape(n['until'])}[/cyan]" if n["until"] is not None else ""
            _add(node.add(f"[bold]loop[/bold] {escape(n['path'] or '')}{until}, at most {n['max_iterations']}"),
                 n["steps"])  # fmt: skip
        elif kind == "call":
            _add(node.add(f"[bold]call[/bold] {escape(n['target'])}"), n["steps"])
        else:
            model = f" [dim](model {escape(n['model'])})[/dim]" if n.get("model") else ""
            node.add(escape(n["span"]) + model)


def tree(pipeline: Pipeline, title: str) -> Tree:
    root = Tree(title)
    _add(root, describe(pipeline.stages))
    return root


@pipeline_app.command("show")
def show(
    application: Annotated[str, typer.Argument(help="Application name")],
    config: Annotated[str | None, typer.Option("--config", "-c", help="YAML config file")] = None,
) -> None:
    """Print an application's pipeline as a tree (conditions, loop bounds, sub-pipelines)."""
    from portico.config import ConfigError, load_config
    from portico.runtime import Runtime  # builds every pipeline, as serve does (no model loads, no network)

    err = Console(stderr=True)
    try:
        cfg = load_config(config)
        app = next((a for a in cfg.applications if a.name == application), None)
        if app is None:
            known = ", ".join(a.name for a in cfg.applications) or "none"
            err.print(f"[red]error:[/red] no application '{escape(application)}' (applications: {escape(known)})")
            raise typer.Exit(2)
        runtime = Runtime(cfg)
    except (ConfigError, ValueError, PipelineError) as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None
    title = f"[bold]{escape(app.name)}[/bold] → {escape(app.model)} (version {escape(app.version)})"
    Console().print(tree(runtime.applications[app.name], title))
