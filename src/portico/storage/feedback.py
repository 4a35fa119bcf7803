"""Feedback on served requests, and the per-request facts it needs (who asked, which application version).

``request_meta`` holds one row per chat request whether or not its trace was sampled: the key that made it (feedback
is accepted only from that key or the master key), the application and its version, the model, and the user and
session ids the client sent (OpenAI's ``user`` and ``metadata``), so feedback can attach to a conversation. It is
written in batches off the request path like usage. ``feedback`` rows copy those facts so aggregation is one scan
without a join; a pairwise judgement also stores the second request's facts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import JSON, Column, Float, Index, Integer, String, Table, Text, func, insert, select
from sqlalchemy.exc import IntegrityError

from portico.storage.batch import BatchWriter
from portico.storage.db import Database, metadata

request_meta = Table(
    "request_meta",
    metadata,
    Column("request_id", String(128), primary_key=True),
    Column("ts", Float, nullable=False),
    Column("key_id", String(40), nullable=True),
    Column("key_name", String(200), nullable=True),
    Column("application", String(200), nullable=True),
    Column("version", String(40), nullable=True),
    Column("model", String(200), nullable=True),
    Column("deployment", String(300), nullable=True),
    Column("status", Integer, nullable=True),
    Column("user", String(200), nullable=True),
    Column("session", String(200), nullable=True),
    Column("variant", String(200), nullable=True),  # experiments: which variant served it
)
Index("ix_request_meta_session", request_meta.c.session)
Index("ix_request_meta_ts", request_meta.c.ts)  # the retention purge finds old rows by it

feedback = Table(
    "feedback",
    metadata,
    Column("feedback_id", String(128), primary_key=True),
    Column("ts", Float, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("other_request_id", String(128), nullable=True),  # pairwise: the second request
    Column("metric", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # the metric's type, or 'pairwise'
    Column("value_num", Float, nullable=True),  # boolean 1/0, float, pairwise 1 (first won) / 0 / 0.5 (tie)
    Column("value_text", Text, nullable=True),  # category, comment, pairwise winner (a | b | tie)
    Column("value", JSON(none_as_null=True), nullable=True),  # the value as sent (a demonstration's message)
    Column("key_id", String(40), nullable=True),
    Column("key_name", String(200), nullable=True),
    Column("user", String(200), nullable=True),
    Column("session", String(200), nullable=True),
    Column("application", String(200), nullable=True),
    Column("version", String(40), nullable=True),
    Column("model", String(200), nullable=True),
    Column("other_application", String(200), nullable=True),
    Column("other_version", String(40), nullable=True),
    Column("other_model", String(200), nullable=True),
)
Index("ix_feedback_request", feedback.c.request_id)
Index("ix_feedback_ts", feedback.c.ts)


@dataclass(slots=True)
class RequestMeta:
    request_id: str
    ts: float
    key_id: str | None = None
    key_name: str | None = None
    application: str | None = None
    version: str | None = None
    model: str | None = None
    deployment: str | None = None
    status: int | None = None
    user: str | None = None
    session: str | None = None
    variant: str | None = None

    def row(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in _META_FIELDS}


_META_FIELDS = tuple(f.name for f in fields(RequestMeta))


class RequestMetaWriter(BatchWriter[RequestMeta]):
    name = "request-meta"

    async def _insert(self, batch: list[RequestMeta]) -> None:
        try:
            async with self.db.engine.begin() as conn:
                await conn.execute(insert(request_meta), [r.row() for r in batch])
        except IntegrityError:  # a client-chosen x-request-id seen twice: keep the first, like traces do
            await self._one_by_one(batch)

    async def _one_by_one(self, batch: list[RequestMeta]) -> None:
        for r in batch:
            try:
                async with self.db.engine.begin() as conn:
                    await conn.execute(insert(request_meta), [r.row()])
            except IntegrityError:
                continue


async def get_meta(db: Database, request_id: str) -> dict[str, Any] | None:
    async with db.engine.connect() as conn:
        row = (
            (await conn.execute(select(request_meta).where(request_meta.c.request_id == request_id))).mappings().first()
        )
    return _plain(row) if row is not None else None


async def insert_feedback(db: Database, row: dict[str, Any]) -> bool:
    """False when the feedback id is taken (the caller decides whether that is a retry or a conflict)."""
    try:
        async with db.engine.begin() as conn:
            await conn.execute(insert(feedback), [row])
        return True
    except IntegrityError:
        return False


async def get_feedback(db: Database, feedback_id: str) -> dict[str, Any] | None:
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(feedback).where(feedback.c.feedback_id == feedback_id))).mappings().first()
    return _plain(row) if row is not None else None


async def feedback_for(db: Database, request_id: str) -> list[dict[str, Any]]:
    """Every judgement about one request, the pairwise ones that name it second included, oldest first."""
    stmt = select(feedback).where((feedback.c.request_id == request_id) | (feedback.c.other_request_id == request_id))
    async with db.engine.connect() as conn:
        rows = (await conn.execute(stmt.order_by(feedback.c.ts))).mappings().all()
    return [_plain(r) for r in rows]


async def feedback_by_request(db: Database, request_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i in range(0, len(request_ids), 500):
        chunk = request_ids[i : i + 500]
        stmt = select(feedback).where(feedback.c.request_id.in_(chunk)).order_by(feedback.c.ts)
        async with db.engine.connect() as conn:
            for r in (await conn.execute(stmt)).mappings().all():
                out[r["request_id"]].append(_plain(r))
    return out


async def feedback_stats(
    db: Database, since: float, until: float, categories: dict[str, list[str]]
) -> list[dict[str, Any]]:
    """Per metric x application x version x model: count, mean (numeric kinds), category counts, and pairwise
    wins/losses/ties counted for both sides of each judgement."""
    window = (feedback.c.ts >= since) & (feedback.c.ts < until)
    keys = (feedback.c.metric, feedback.c.kind, feedback.c.application, feedback.c.version, feedback.c.model)
    single = (
        select(*keys, func.count().label("n"), func.avg(feedback.c.value_num).label("mean"))
        .where(window & (feedback.c.kind != "pairwise"))
        .group_by(*keys)
    )
    cats = (
        select(feedback.c.metric, feedback.c.application, feedback.c.version, feedback.c.model,
               feedback.c.value_text, func.count().label("n"))
        .where(window & (feedback.c.kind == "category"))
        .group_by(feedback.c.metric, feedback.c.application, feedback.c.version, feedback.c.model,
                  feedback.c.value_text)
    )  # fmt: skip
    pairs = select(
        feedback.c.metric,
        feedback.c.application,
        feedback.c.version,
        feedback.c.model,
        feedback.c.other_application,
        feedback.c.other_version,
        feedback.c.other_model,
        feedback.c.value_text,
    ).where(window & (feedback.c.kind == "pairwise"))
    async with db.engine.connect() as conn:
        single_rows = (await conn.execute(single)).all()
        cat_rows = (await conn.execute(cats)).all()
        pair_rows = (await conn.execute(pairs)).all()
    groups: dict[tuple, dict[str, Any]] = {}

    def entry(metric: str, kind: str, app: Any, version: Any, model: Any) -> dict[str, Any]:
        k = (metric, kind, app, version, model)
        if k not in groups:
            groups[k] = {"metric": metric, "kind": kind, "application": app, "version": version, "model": model,
                         "count": 0}  # fmt: skip
        return groups[k]

    for metric, kind, app, version, model, n, mean in single_rows:
        e = entry(metric, kind, app, version, model)
        e["count"] += int(n)
        if kind in ("boolean", "float") and mean is not None:
            e["mean"] = round(float(mean), 6)
    for metric, app, version, model, value, n in cat_rows:
        if value in categories.get(metric, ()):  # only configured categories (a config change may drop some)
            entry(metric, "category", app, version, model).setdefault("categories", {})[value] = int(n)
    for metric, app, version, model, oapp, oversion, omodel, winner in pair_rows:
        for side, (a, v, m) in (("a", (app, version, model)), ("b", (oapp, oversion, omodel))):
            e = entry(metric, "pairwise", a, v, m)
            e["count"] += 1
            outcome = "ties" if winner == "tie" else ("wins" if winner == side else "losses")
            e[outcome] = e.get(outcome, 0) + 1
    return sorted(groups.values(), key=lambda g: (g["metric"], str(g["application"]), str(g["version"]),
                                                  str(g["model"])))  # fmt: skip


def _plain(row: Any) -> dict[str, Any]:
    return {str(k): v for k, v in row.items()}
