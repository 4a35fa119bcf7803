"""A built pipeline as plain data: the one walk behind ``portico pipeline show`` and the dashboard's drawing.

Each node names the span the step or construct produces when it runs (``span``), so a request's trace can be laid
over the graph: a step ran if its span is in the trace under a part that ran, an arm if its path is, a loop's
iterations are its ``<path> iteration N`` spans.
"""

from __future__ import annotations

from typing import Any

from portico.flow.constructs import Branch, Call, Loop
from portico.pipeline import Parallel, Pipeline, Step
from portico.pipeline.runner import Stage


def node(st: Stage) -> dict[str, Any]:
    if isinstance(st, Parallel):
        return {"kind": "parallel", "steps": [node(s) for s in st.steps]}
    if isinstance(st, Branch):
        arms = [{"path": a.path, "span": a.path, "condition": a.condition.text if a.condition else None,
                 "steps": describe(a.stages)} for a in st.arms]  # fmt: skip
        return {"kind": "branch", "path": st.path, "span": st.name, "arms": arms, "has_else": st.has_else,
                "no_arm_span": f"{st.path} (no arm)"}  # fmt: skip
    if isinstance(st, Loop):
        return {"kind": "loop", "path": st.path, "span": st.name, "until": st.until.text if st.until else None,
                "max_iterations": st.max_iterations, "steps": describe(st.body)}  # fmt: skip
    if isinstance(st, Call):
        return {"kind": "call", "path": st.path, "span": st.name, "target": st.target, "steps": describe(st.stages)}
    return _step(st)


def _step(s: Step) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "step", "span": s.name, "path": getattr(s, "path", None)}
    pinned = getattr(s, "pinned", None)
    if pinned:
        out["model"] = pinned
    return out


def describe(stages: tuple[Stage, ...] | list[Stage]) -> list[dict[str, Any]]:
    return [node(st) for st in stages]


def graph(name: str, model: str, version: str, pipeline: Pipeline) -> dict[str, Any]:
    return {"application": name, "model": model, "version": version, "steps": describe(pipeline.stages)}
