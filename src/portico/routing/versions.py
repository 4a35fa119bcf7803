"""Which version of a trained router serves: ``<root>/<name>/manifest.json``.

Training writes versions (``store.save``); the manifest says which one is *promoted* (served), keeps every gate
decision (the shadow evaluation's numbers, promoted or not) and the promotion history, so a rollback is one
command and the serving process follows it. Without a manifest the latest version serves (routers trained before
the flywheel existed keep working).

The manifest is replaced atomically (write, then rename) under a lock file, so a reader never sees half of it and
two promotions cannot interleave.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


def manifest_path(root: str | Path, name: str) -> Path:
    return Path(root) / name / MANIFEST


def _versions(root: str | Path, name: str) -> list[int]:
    base = Path(root) / name
    if not base.is_dir():
        return []
    out = []
    for p in base.iterdir():
        if p.is_dir() and p.name.startswith("v") and p.name[1:].isdigit():
            out.append(int(p.name[1:]))
    return sorted(out)


def read(root: str | Path, name: str) -> dict[str, Any] | None:
    path = manifest_path(root, name)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


def current(root: str | Path, name: str) -> int | None:
    """The version that serves: the manifest's promoted one, else (no manifest yet) the latest."""
    m = read(root, name)
    if m is not None:
        return m.get("current")
    found = _versions(root, name)
    return found[-1] if found else None


@contextmanager
def _locked(root: str | Path, name: str) -> Iterator[dict[str, Any]]:
    """The manifest for read-modify-write; written back atomically when the block ends without an error."""
    base = Path(root) / name
    base.mkdir(parents=True, exist_ok=True)
    with (base / ".manifest.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        m = read(root, name)
        if m is None:
            # First write: pin what serves today (the latest version), so a new candidate does not serve by
            # merely existing.
            found = _versions(root, name)
            m = {"current": found[-1] if found else None, "history": [], "gates": []}
        yield m
        fd, tmp = tempfile.mkstemp(prefix=".manifest-", dir=base)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(m, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, base / MANIFEST)


def pin(root: str | Path, name: str) -> int | None:
    """Create the manifest if missing (pinning the serving version) and return the serving version."""
    with _locked(root, name) as m:
        return m["current"]


def promote(root: str | Path, name: str, version: int, *, reason: str = "manual", gate: dict | None = None) -> None:
    if version not in _versions(root, name):
        raise FileNotFoundError(f"router '{name}' has no version {version} under {root}")
    with _locked(root, name) as m:
        m["history"].append({"ts": time.time(), "action": "promote", "version": version, "from": m["current"],
                             "reason": reason, **({"gate": gate} if gate else {})})  # fmt: skip
        m["current"] = version


def rollback(root: str | Path, name: str, to: int | None = None) -> int:
    """Serve ``to`` (default: the version that served before the current one); returns it."""
    with _locked(root, name) as m:
        if to is None:
            served = [h["version"] for h in m["history"] if h["action"] in ("promote", "rollback")]
            # The version served before the current one: walk back over the promotion history.
            before = [h["from"] for h in m["history"] if h["action"] == "promote" and h["version"] == m["current"]]
            before = [v for v in before if v is not None]
            if not before:
                raise ValueError(f"router '{name}' has no earlier promoted version to roll back to (served: {served})")
            to = before[-1]
        if to not in _versions(root, name):
            raise FileNotFoundError(f"router '{name}' has no version {to} under {root}")
        m["history"].append({"ts": time.time(), "action": "rollback", "version": to, "from": m["current"]})
        m["current"] = to
    return to


def record_gate(root: str | Path, name: str, decision: dict[str, Any]) -> None:
    """Keep a shadow-gate decision (candidate version, both routers' numbers, promoted or not)."""
    with _locked(root, name) as m:
        m["gates"].append({"ts": time.time(), **decision})


def update(root: str | Path, name: str, fn: Callable[[dict[str, Any]], None]) -> None:
    """Any other read-modify-write of the manifest (e.g. the flywheel's label count)."""
    with _locked(root, name) as m:
        fn(m)


def table(root: str | Path, name: str) -> list[dict[str, Any]]:
    """One row per version: whether it serves, when it was promoted, its last gate decision."""
    m = read(root, name) or {"current": current(root, name), "history": [], "gates": []}
    rows = []
    for v in _versions(root, name):
        meta_path = Path(root) / name / f"v{v}" / "meta.json"
        info = json.loads(meta_path.read_text(encoding="utf-8")).get("info", {}) if meta_path.exists() else {}
        gates = [g for g in m["gates"] if g.get("candidate") == v]
        promoted = [h for h in m["history"] if h["version"] == v and h["action"] == "promote"]
        rows.append({"version": v, "serving": v == m["current"], "records": info.get("records"),
                     "source": info.get("source", "file"), "gate": gates[-1] if gates else None,
                     "promoted_at": promoted[-1]["ts"] if promoted else None})  # fmt: skip
    return rows
