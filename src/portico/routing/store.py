"""Versioned storage of trained routers: ``<root>/<name>/v<N>/model.npz`` (arrays) + ``meta.json``.

Saving never overwrites: it writes the next version. Loading takes a version or the promoted one (versions.py),
reads arrays without pickle, and gives identical predictions every time.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from portico.routing.preference import PreferenceModel
from portico.routing.versions import current

_VERSION = re.compile(r"^v(\d+)$")
DEFAULT_ROOT = ".portico/routers"


def versions(root: str | Path, name: str) -> list[int]:
    base = Path(root) / name
    if not base.is_dir():
        return []
    return sorted(int(m.group(1)) for p in base.iterdir() if p.is_dir() and (m := _VERSION.match(p.name)))


def version_dir(root: str | Path, name: str, version: int | None = None) -> Path:
    """The directory of ``version`` (default: the latest) of router ``name``."""
    found = versions(root, name)
    if not found:
        raise FileNotFoundError(f"no trained router '{name}' under {root}")
    v = found[-1] if version is None else version
    if v not in found:
        raise FileNotFoundError(f"router '{name}' has no version {v} under {root} (have: {found})")
    return Path(root) / name / f"v{v}"


def save(model: PreferenceModel, root: str | Path, name: str) -> Path:
    """Write ``model`` as the next version of ``name``; returns its directory."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"router name must be letters, digits, '.', '_' or '-', not {name!r}")
    base = Path(root) / name
    base.mkdir(parents=True, exist_ok=True)
    arrays, meta = model.to_arrays()
    # Write into a temporary directory, then rename: a reader never sees a half-written version.
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=base))
    np.savez(tmp / "model.npz", **arrays)
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    while True:
        found = versions(root, name)
        target = base / f"v{(found[-1] + 1) if found else 1}"
        try:
            os.rename(tmp, target)
            return target
        except OSError:
            if not target.exists():
                raise


def load(root: str | Path, name: str, version: int | None = None) -> PreferenceModel:
    """``version`` None: the promoted version (see versions.py; the latest when nothing was ever promoted)."""
    if version is None:
        version = current(root, name)
        if version is None and versions(root, name):
            raise FileNotFoundError(f"router '{name}' under {root} has no promoted version (portico router promote)")
    path = version_dir(root, name, version)
    meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
    with np.load(path / "model.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    model = PreferenceModel.from_arrays(arrays, meta)
    model.info = {**model.info, "name": name, "version": int(path.name[1:])}
    return model


def save_threshold(
    root: str | Path, name: str, strong_share: float, threshold: float, sample: int, version: int | None = None
) -> Path:
    """Record a calibrated threshold next to the model (``calibration.json``: strong share → threshold)."""
    path = version_dir(root, name, version) / "calibration.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"thresholds": {}}
    data["thresholds"][f"{strong_share:g}"] = {"threshold": threshold, "sample": sample}
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def load_threshold(root: str | Path, name: str, strong_share: float, version: int | None = None) -> float:
    path = version_dir(root, name, version) / "calibration.json"
    data = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {"thresholds": {}}
    entry = data["thresholds"].get(f"{strong_share:g}")
    if entry is None:
        have = ", ".join(sorted(data["thresholds"])) or "none"
        raise ValueError(
            f"router '{name}' is not calibrated for strong_share {strong_share:g} (have: {have}); run "
            f"`portico router calibrate --name {name} --strong-share {strong_share:g} PROMPTS.jsonl`"
        )
    return float(entry["threshold"])
