"""Stored traces read back for the admin request browser (observability.trace_writer writes them)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String, cast, or_, select

from portico.storage.db import Database, spans, traces

SUMMARY = tuple(c for c in traces.c if c.name not in ("input", "output"))


async def list_traces(
    db: Database,
    *,
    filters: dict[str, Any],
    since: float | None = None,
    until: float | None = None,
    before: float | None = None,
    text: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Summaries, newest first. ``filters`` maps column names (key_name, model, …) to exact values."""
    stmt = select(*SUMMARY)
    for name, value in filters.items():
        stmt = stmt.where(traces.c[name] == value)
    if since is not None:
        stmt = stmt.where(traces.c.ts >= since)
    if until is not None:
        stmt = stmt.where(traces.c.ts < until)
    if before is not None:
        stmt = stmt.where(traces.c.ts < before)
    if text:
        # Searches the stored JSON text; LIKE wildcards typed by the user are matched literally.
        pattern = "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(cast(traces.c.input, String).like(pattern, escape="\\"),
                              cast(traces.c.output, String).like(pattern, escape="\\")))  # fmt: skip
    stmt = stmt.order_by(traces.c.ts.desc()).limit(limit)
    async with db.engine.connect() as conn:
        return [_plain(r) for r in (await conn.execute(stmt)).mappings().all()]


async def get_trace(db: Database, request_id: str) -> dict[str, Any] | None:
    """One trace with its spans nested as a tree (``children`` arrays, in start order)."""
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(traces).where(traces.c.request_id == request_id))).mappings().first()
        if row is None:
            return None
        rows = (await conn.execute(select(spans).where(spans.c.request_id == request_id))).mappings().all()
    out = _plain(row)
    out["spans"] = span_tree([_plain(r) for r in rows])
    return out


def _plain(row: Any) -> dict[str, Any]:
    # Column keys are SQLAlchemy ``quoted_name`` (a str subclass) which orjson refuses.
    return {str(k): v for k, v in row.items()}


def span_tree(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    nodes = {}
    for r in sorted(rows, key=lambda r: (r["start_ms"], r["span_id"])):
        r.pop("request_id", None)
        nodes[r["span_id"]] = {**r, "children": []}
    roots = []
    for n in nodes.values():
        parent = nodes.get(n["parent_id"]) if n["parent_id"] else None
        (parent["children"] if parent is not None else roots).append(n)
    return roots
