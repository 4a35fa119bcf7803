"""Feedback: validation against the configured metrics, ownership checks, storage and Prometheus counters.

Only the key that made a request (or the master key) may judge it; any other caller gets the same 404 as for an
unknown id, so a key cannot probe which request ids exist. A ``feedback_id`` makes a submission idempotent: the
same id with the same content returns the stored row, with different content it is a 409.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from portico.config.evaluation import MetricConfig
from portico.protocol.errors import InvalidRequest, NotFound, PorticoError
from portico.storage.feedback import (
    RequestMeta,
    RequestMetaWriter,
    feedback_for,
    feedback_stats,
    get_feedback,
    get_meta,
    insert_feedback,
)

if TYPE_CHECKING:
    from portico.config.schema import PorticoConfig
    from portico.gateway.control import Caller
    from portico.observability.metrics import Metrics
    from portico.pipeline.context import RequestContext
    from portico.storage.db import Database
    from portico.storage.usage import UsageRecord

MAX_TEXT = 20_000  # characters of a comment or demonstration
_ID = Field(default=None, min_length=1, max_length=128)


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metric: str = Field(min_length=1, max_length=64)
    request_id: str | None = _ID
    pair: list[str] | None = Field(default=None, min_length=2, max_length=2)
    winner: str | None = _ID
    value: Any = None
    feedback_id: str | None = _ID
    user: str | None = Field(default=None, max_length=200)
    session: str | None = Field(default=None, max_length=200)

    # Field validators where possible, so a 400's ``param`` names the field.
    @field_validator("pair")
    @classmethod
    def _distinct(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and v[0] == v[1]:
            raise ValueError("two different request ids")
        return v

    @field_validator("winner")
    @classmethod
    def _winner(cls, v: str | None, info: ValidationInfo) -> str | None:
        pair = info.data.get("pair")
        if v is not None and pair is None:
            raise ValueError("only with pair")
        if pair is not None and v not in (*pair, "tie"):
            raise ValueError("one of the pair's request ids, or 'tie'")
        return v

    @model_validator(mode="after")
    def _one_target(self) -> FeedbackBody:
        if (self.request_id is None) == (self.pair is None):
            raise ValueError("send either request_id (with value) or pair (with winner)")
        if self.pair is not None and self.winner is None:
            raise ValueError("a pair needs a winner")
        return self


class Conflict(PorticoError):
    status = 409
    type = "invalid_request_error"
    code = "feedback_id_conflict"


def value_columns(metric: MetricConfig, value: Any) -> dict[str, Any]:
    """The value checked against its metric → (value_num, value_text, value); 400 naming ``value`` otherwise."""
    t = metric.type
    if value is None:
        raise InvalidRequest(f"value is required for metric '{metric.name}' ({t})", param="value")
    if t == "boolean":
        if not isinstance(value, bool):
            raise InvalidRequest(f"metric '{metric.name}' takes true or false", param="value", code="invalid_type")
        return {"value_num": 1.0 if value else 0.0, "value_text": None, "value": value}
    if t == "float":
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise InvalidRequest(f"metric '{metric.name}' takes a number", param="value", code="invalid_type")
        if (metric.min is not None and value < metric.min) or (metric.max is not None and value > metric.max):
            raise InvalidRequest(f"metric '{metric.name}' takes a number in [{metric.min}, {metric.max}]",
                                 param="value", code="out_of_range")  # fmt: skip
        return {"value_num": float(value), "value_text": None, "value": value}
    if t == "category":
        if value not in (metric.categories or ()):
            raise InvalidRequest(f"metric '{metric.name}' takes one of {metric.categories}", param="value",
                                 code="invalid_value")  # fmt: skip
        return {"value_num": None, "value_text": value, "value": value}
    if t == "comment":
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_TEXT:
            raise InvalidRequest(f"metric '{metric.name}' takes a non-empty string (at most {MAX_TEXT} chars)",
                                 param="value", code="invalid_type")  # fmt: skip
        return {"value_num": None, "value_text": value, "value": None}
    # demonstration: the answer the model should have given, as text or an assistant message
    text = value if isinstance(value, str) else (value.get("content") if isinstance(value, dict) else None)
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        raise InvalidRequest(f"metric '{metric.name}' takes the corrected answer: a string or "
                             '{"role": "assistant", "content": "…"}', param="value", code="invalid_type")  # fmt: skip
    return {"value_num": None, "value_text": text, "value": {"role": "assistant", "content": text}}


class FeedbackService:
    """Built once per runtime. ``observe`` runs on every settled chat request when any metric is configured."""

    def __init__(self, metrics: list[MetricConfig], db: Database, prom: Metrics, versions: dict[str, str], *,
                 batch_size: int, interval: float, models: set[str]) -> None:  # fmt: skip
        self.metrics = {m.name: m for m in metrics}
        self.db = db
        self.versions = versions
        self.models = models  # bounded label values: configured models and applications
        self.enabled = bool(self.metrics)  # build() also turns it on for experiments (variant on each request)
        self.meta = RequestMetaWriter(db, batch_size=batch_size, interval=interval)
        self.interval = interval
        labels = ("metric", "application", "version", "model", "value")
        self.counter = prom.counter("feedback", "Feedback received by metric (value: boolean, category, "
                                    "or win/loss/tie for pairwise)", labels)  # fmt: skip
        self.sum = prom.counter("feedback_value_sum", "Sum of numeric feedback values (mean = sum / count)",
                                labels[:4])  # fmt: skip

    @classmethod
    def build(cls, cfg: PorticoConfig, db: Database, prom: Metrics) -> FeedbackService:
        versions = {a.name: a.version for a in cfg.applications}
        svc = cls(cfg.metrics, db, prom, versions, models=set(versions) | {m.name for m in cfg.models},
                  batch_size=cfg.storage.usage_batch_size, interval=cfg.storage.usage_flush_seconds)  # fmt: skip
        svc.enabled = bool(cfg.metrics or cfg.experiments)
        return svc

    @property
    def categories(self) -> dict[str, list[str]]:
        return {n: list(m.categories or []) for n, m in self.metrics.items() if m.type == "category"}

    # ---- request path ----
    def observe(self, ctx: RequestContext, rec: UsageRecord) -> None:
        if not self.enabled:
            return
        req = ctx.request
        md = req.metadata or {}
        self.meta.add(RequestMeta(
            request_id=rec.request_id, ts=rec.ts, key_id=ctx.caller.get("key_id"), key_name=rec.key_name,
            application=ctx.application, version=self.versions.get(ctx.application or ""), model=rec.model,
            deployment=rec.deployment, status=rec.status,
            user=(req.user or md.get("user_id") or md.get("user") or None),
            session=(md.get("session_id") or md.get("session") or md.get("conversation_id") or None),
            variant=ctx.state.get("experiment.variant"),
        ))  # fmt: skip

    def start(self) -> None:
        self.meta.start()

    async def flush(self) -> None:
        await self.meta.flush()

    async def close(self) -> None:
        await self.meta.close()

    # ---- reading ----
    async def about(self, request_id: str) -> dict[str, Any]:
        """What the trace page shows beside a trace: its feedback and the conversation it belongs to."""
        await self.meta.flush()
        meta = await get_meta(self.db, request_id) or {}
        rows = await feedback_for(self.db, request_id)
        return {"feedback": [public(r) for r in rows], "user": meta.get("user"), "session": meta.get("session"),
                "version": meta.get("version"), "variant": meta.get("variant")}  # fmt: skip

    async def stats(self, since: float, until: float) -> list[dict[str, Any]]:
        return await feedback_stats(self.db, since, until, self.categories)

    # ---- feedback ----
    async def _owned(self, caller: Caller, request_id: str, param: str) -> dict[str, Any]:
        meta = await self._meta(request_id)
        own = caller.admin or (meta is not None and meta["key_id"] == (caller.key.id if caller.key else None))
        if meta is None or not own:
            raise NotFound(f"No request '{request_id}' to give feedback on", param=param, code="request_not_found")
        return meta

    async def _meta(self, request_id: str) -> dict[str, Any] | None:
        await self.meta.flush()
        meta = await get_meta(self.db, request_id)
        # Another worker may still hold the row in its batch: wait for one flush interval, twice.
        for _ in range(2):
            if meta is not None:
                break
            await asyncio.sleep(self.interval)
            meta = await get_meta(self.db, request_id)
        return meta

    async def submit(self, caller: Caller, body: FeedbackBody) -> tuple[dict[str, Any], bool]:
        """(the stored row, created?)."""
        metric = self.metrics.get(body.metric)
        if metric is None:
            known = ", ".join(self.metrics) or "none are configured (metrics: in portico.yaml)"
            raise InvalidRequest(f"Unknown metric '{body.metric}'; metrics: {known}", param="metric",
                                 code="unknown_metric")  # fmt: skip
        row: dict[str, Any] = {"feedback_id": body.feedback_id or "fb-" + uuid.uuid4().hex, "ts": time.time(),
                               "metric": metric.name, "user": body.user, "session": body.session}  # fmt: skip
        if body.pair is not None:
            if metric.type in ("comment", "demonstration"):
                raise InvalidRequest(f"metric '{metric.name}' ({metric.type}) cannot judge a pair", param="metric")
            if body.value is not None:
                raise InvalidRequest("a pairwise judgement takes winner, not value", param="value")
            a = await self._owned(caller, body.pair[0], "pair")
            b = await self._owned(caller, body.pair[1], "pair")
            winner = "tie" if body.winner == "tie" else ("a" if body.winner == body.pair[0] else "b")
            row.update(kind="pairwise", request_id=a["request_id"], other_request_id=b["request_id"],
                       value_num={"a": 1.0, "b": 0.0, "tie": 0.5}[winner], value_text=winner, value=None,
                       other_application=b["application"], other_version=b["version"],
                       other_model=b["model"])  # fmt: skip
        else:
            assert body.request_id is not None
            cols = value_columns(metric, body.value)
            a = await self._owned(caller, body.request_id, "request_id")
            row.update(kind=metric.type, request_id=a["request_id"], other_request_id=None, **cols)
        row.update(key_id=caller.key.id if caller.key else None, key_name=caller.name, application=a["application"],
                   version=a["version"], model=a["model"])  # fmt: skip
        row["user"] = row["user"] or a["user"]
        row["session"] = row["session"] or a["session"]
        if await insert_feedback(self.db, row):
            self._count(row)
            return row, True
        stored = await get_feedback(self.db, row["feedback_id"])
        if stored is None or not _same(stored, row):
            raise Conflict(f"feedback_id '{row['feedback_id']}' was already used for different feedback",
                           param="feedback_id")  # fmt: skip
        return stored, False

    def _count(self, row: dict[str, Any]) -> None:
        metric = row["metric"]
        app, version, model = self._labels(row["application"], row["version"], row["model"])
        if row["kind"] == "pairwise":
            other = self._labels(row["other_application"], row["other_version"], row["other_model"])
            for side, labels in (("a", (app, version, model)), ("b", other)):
                w = row["value_text"]
                self.counter.labels(metric, *labels, "tie" if w == "tie" else ("win" if w == side else "loss")).inc()
            return
        value = {"boolean": "true" if row["value_num"] == 1.0 else "false", "category": row["value_text"]}.get(
            row["kind"], ""
        )
        self.counter.labels(metric, app, version, model, value).inc()
        if row["kind"] == "float":
            self.sum.labels(metric, app, version, model).inc(row["value_num"])

    def _labels(self, app: str | None, version: str | None, model: str | None) -> tuple[str, str, str]:
        def bounded(v: str | None) -> str:
            return "none" if v is None else (v if v in self.models else "other")

        a = bounded(app)
        return a, (self.versions.get(a, "none") if app else "none"), bounded(model)


def _same(stored: dict[str, Any], row: dict[str, Any]) -> bool:
    keys = ("request_id", "other_request_id", "metric", "value_num", "value_text")
    return all(stored.get(k) == row.get(k) for k in keys)


def public(row: dict[str, Any]) -> dict[str, Any]:
    """The API's view of a stored row."""
    out = {"object": "feedback", "id": row["feedback_id"], "created": row["ts"], "metric": row["metric"],
           "kind": row["kind"], "request_id": row["request_id"]}  # fmt: skip
    if row["kind"] == "pairwise":
        out["pair"] = [row["request_id"], row["other_request_id"]]
        w = row["value_text"]
        out["winner"] = "tie" if w == "tie" else (row["request_id"] if w == "a" else row["other_request_id"])
    else:
        out["value"] = row["value"] if row["value"] is not None else (row["value_text"] or row["value_num"])
    for k in ("user", "session", "key_name", "application", "version", "model"):
        out[k] = row.get(k)
    return out
