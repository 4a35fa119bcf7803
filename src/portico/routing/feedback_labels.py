"""Routing labels from stored feedback: what ``portico router train --from-feedback`` learns from.

A boolean judgement counts when its request was routed by the preference router (the ``route_preference`` span
says strong or weak, and which router) and its trace stored the prompt (``tracing.content`` full or redacted; an
unsampled or content-free trace gives no label). A pairwise judgement counts when both requests asked the same
prompt; each side's model is the one its route_preference span chose, else the model the request named. The
latest judgement of a request (or pair) on the metric wins. The request's application is the label's domain,
as the step passes it at serving time.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from portico.routing.flywheel import Label
from portico.storage.db import Database, spans, traces
from portico.storage.feedback import feedback

STEP = "route_preference"
_P = f"portico.{STEP}."


def last_user_text(messages: Any) -> str | None:
    """The last user message's text (what route_preference scored), from a trace's stored input."""
    if not isinstance(messages, list):
        return None
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            c = m.get("content")
            if isinstance(c, str):
                return c
            if isinstance(c, list):
                return "".join(p.get("text", "") for p in c if isinstance(p, dict) and p.get("type") == "text")
    return None


async def _chunks(db: Database, stmt_of: Any, ids: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i in range(0, len(ids), 500):
        async with db.engine.connect() as conn:
            out += [dict(r) for r in (await conn.execute(stmt_of(ids[i : i + 500]))).mappings().all()]
    return out


async def collect(db: Database, *, metric: str, router: str, application: str | None = None,
                  since: float | None = None) -> list[Label]:  # fmt: skip
    """Labels for router ``router`` from feedback on ``metric``, oldest first."""
    stmt = select(feedback).where(feedback.c.metric == metric).where(feedback.c.kind.in_(("boolean", "pairwise")))
    if application is not None:
        stmt = stmt.where(feedback.c.application == application)
    if since is not None:
        stmt = stmt.where(feedback.c.ts >= since)
    async with db.engine.connect() as conn:
        rows = [dict(r) for r in (await conn.execute(stmt.order_by(feedback.c.ts))).mappings().all()]
    latest: dict[tuple[str, str | None], dict[str, Any]] = {}
    for r in rows:  # oldest first: a later judgement of the same request (or pair) replaces an earlier one
        latest[(r["request_id"], r["other_request_id"])] = r
    ids = sorted({i for r in latest.values() for i in (r["request_id"], r["other_request_id"]) if i})
    cols = (traces.c.request_id, traces.c.input, traces.c.model, traces.c.application)
    trace_rows = await _chunks(db, lambda c: select(*cols).where(traces.c.request_id.in_(c)), ids)
    span_rows = await _chunks(db, lambda c: select(spans.c.request_id, spans.c.attributes).where(
        spans.c.request_id.in_(c) & (spans.c.name == STEP)), ids)  # fmt: skip
    by_trace = {t["request_id"]: t for t in trace_rows}
    routed = {s["request_id"]: s["attributes"] for s in span_rows}
    return [lab for r in latest.values() if (lab := _label(r, by_trace, routed, router)) is not None]


def _routed_model(attrs: dict[str, Any] | None, router: str) -> str | None:
    """The router's name of the model route_preference chose for this request (None: not routed by ``router``)."""
    if not attrs or str(attrs.get(_P + "router", "")).rpartition("/")[0] != router:
        return None
    pair = attrs.get(_P + "router_pair")
    decision = attrs.get(_P + "decision")
    if not isinstance(pair, list) or len(pair) != 2 or decision not in ("strong", "weak"):
        return None
    return str(pair[0] if decision == "strong" else pair[1])


def _label(r: dict[str, Any], by_trace: dict[str, dict[str, Any]], routed: dict[str, Any],
           router: str) -> Label | None:  # fmt: skip
    a = by_trace.get(r["request_id"])
    prompt = last_user_text(a["input"]) if a else None
    if a is None or not prompt:
        return None
    domain = a.get("application")
    if r["kind"] == "boolean":
        model = _routed_model(routed.get(r["request_id"]), router)
        if model is None:
            return None
        return Label(key=r["request_id"], prompt=prompt, domain=domain, model=model, ok=r["value_num"] == 1.0)
    b = by_trace.get(r["other_request_id"])
    if b is None or last_user_text(b["input"]) != prompt:
        return None
    model_a = _routed_model(routed.get(r["request_id"]), router) or a.get("model")
    model_b = _routed_model(routed.get(r["other_request_id"]), router) or b.get("model")
    if not model_a or not model_b or model_a == model_b:
        return None
    winner = {"a": "model_a", "b": "model_b"}.get(r["value_text"], "tie")
    return Label(key=f"{r['request_id']}|{r['other_request_id']}", prompt=prompt, domain=domain,
                 model_a=model_a, model_b=model_b, winner=winner)  # fmt: skip


def count(labels: Iterable[Label]) -> dict[str, int]:
    out = {"boolean": 0, "pairwise": 0}
    for lab in labels:
        out["pairwise" if lab.pairwise else "boolean"] += 1
    return out
