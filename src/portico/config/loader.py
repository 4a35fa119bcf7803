"""Load ``portico.yaml``: YAML → ``${ENV}`` interpolation → validation, with errors that name the bad key.

This is the only module that reads the environment for configuration (see docs: configuration is data).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from portico.config.schema import PorticoConfig

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

DEFAULT_CONFIG: dict[str, Any] = {
    "models": [
        {"name": "local", "type": "chat", "deployments": [{"provider": "local"}]},
        {"name": "local-embed", "type": "embedding", "deployments": [{"provider": "local"}]},
    ],
    "applications": [],
}


_PROVIDER_TAGS = frozenset({"openai", "azure", "anthropic", "gemini", "vertex", "local"})


class ConfigError(Exception):
    """The configuration is invalid; the message lists every problem with its key path."""


def _path_str(parts: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or "(top level)"


def interpolate(node: Any, env: Mapping[str, str], path: tuple[Any, ...] = ()) -> Any:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in every string of the tree; unset vars without default fail."""
    if isinstance(node, dict):
        return {k: interpolate(v, env, (*path, k)) for k, v in node.items()}
    if isinstance(node, list):
        return [interpolate(v, env, (*path, i)) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{_path_str(path)}: environment variable {name} is not set (write ${{{name}:-default}} for a default)"
        )

    return _ENV_REF.sub(sub, node)


def _clean_pydantic_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    # A discriminated union adds its tag ("openai", …) right after the list index; drop it, keep real keys.
    return tuple(p for i, p in enumerate(loc) if not (p in _PROVIDER_TAGS and i > 0 and isinstance(loc[i - 1], int)))


def validate(data: Any, source: str = "config") -> PorticoConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a 'models' list")
    try:
        return PorticoConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            where = _path_str(_clean_pydantic_path(tuple(err["loc"])))
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            lines.append(f"  {where}: {msg}")
        raise ConfigError(f"invalid configuration in {source}:\n" + "\n".join(lines)) from None


def load_config(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> PorticoConfig:
    """Load a config file, or the embedded default (local chat + local embeddings) when ``path`` is None."""
    env = os.environ if env is None else env
    if path is None:
        return validate(_with_env_master_key(DEFAULT_CONFIG, env), "the embedded default")
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from None
    data = interpolate(raw, env)
    return validate(_with_env_master_key(data, env), str(p))


def _with_env_master_key(data: Any, env: Mapping[str, str]) -> Any:
    """``PORTICO_MASTER_KEY`` sets the master key when the file does not."""
    key = env.get("PORTICO_MASTER_KEY")
    if not key or not isinstance(data, dict):
        return data
    auth = data.get("auth") or {}
    if isinstance(auth, dict) and not auth.get("master_key"):
        data = {**data, "auth": {**auth, "master_key": key}}
    return data


def config_path_from_env(env: Mapping[str, str] | None = None) -> str | None:
    """``PORTICO_CONFIG`` carries the config path into uvicorn worker processes."""
    env = os.environ if env is None else env
    return env.get("PORTICO_CONFIG") or None
