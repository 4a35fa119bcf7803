"""The config loader every ``portico`` command uses: a bad config is printed (no traceback) and exits 2.

Its own module so the sub-command apps (``portico.commands``) share it without importing
``portico.cli``, which imports them.
"""

from __future__ import annotations

import typer
from rich.console import Console

from portico.config import ConfigError, PorticoConfig, load_config


def load_for_cli(path: str | None) -> PorticoConfig:
    try:
        return load_config(path)
    except ConfigError as e:
        Console(stderr=True).print(f"[red]error:[/red] {e}", highlight=False)
        raise typer.Exit(2) from None
