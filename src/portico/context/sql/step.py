"""``sql`` step: answer the request's question from a SQL source (``mode: answer``, the pipeline stops there), or
put the rows in ``ctx.documents`` as context for the generate step (``mode: context``)."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.context.sql.generate import SqlAnswerer, SqlFailed, rows_table
from portico.context.sql.service import UnknownSource, sql_of
from portico.pipeline.context import RequestContext
from portico.pipeline.options import parse_options
from portico.pipeline.step import Step
from portico.protocol.chat import choice_dict, completion_dict, usage_dict


class SqlStepOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1)
    mode: Literal["answer", "context"] = "answer"
    model: str | None = None  # writes the SQL (and the answer); default: the source's model, else the app's
    on_error: Literal["answer", "continue"] = "answer"  # no query ran: say so, or go on without rows


def completion_with_sql(ctx: RequestContext, text: str, sql: dict[str, Any]) -> dict[str, Any]:
    out = completion_dict(id=f"chatcmpl-{ctx.request_id}", model=ctx.model, created=int(time.time()),
                          choices=[choice_dict(0, text, "stop")], usage=usage_dict(0, 0))  # fmt: skip
    out["portico"] = {"sql": sql}
    return out


class SqlStep(Step):
    name = "sql"
    reads = frozenset({"request", "query", "application", "model"})
    writes = frozenset({"documents", "response"})

    def __init__(self, options: dict[str, Any], services: Any) -> None:
        self.options = parse_options(SqlStepOptions, options)
        self.sources = sql_of(services)
        if self.options.source not in self.sources.names():
            raise ValueError(f"unknown sql source '{self.options.source}' (sql_sources: {self.sources.names()})")
        self.cfg = services.cfg
        for m in (self.options.model, self.sources.configs[self.options.source].model):
            if m is not None and self.cfg.model(m) is None:
                raise ValueError(f"unknown model '{m}'")
        self.answerer = SqlAnswerer(services.gateway, getattr(services, "prices", None))

    def _model(self, ctx: RequestContext) -> str:
        o = self.options
        chosen = o.model or self.sources.configs[o.source].model
        if chosen is None and ctx.application is not None:
            app = next((a for a in self.cfg.applications if a.name == ctx.application), None)
            chosen = app.model if app is not None else None
        return chosen or ctx.target_model or ctx.model

    async def run(self, ctx: RequestContext) -> None:
        o = self.options
        question = ctx.query_text().strip()
        if not question:
            ctx.note("sql", source=o.source, reason="no question")
            return
        try:
            source = self.sources.get(o.source)
            got = await self.answerer.answer(source, question, self._model(ctx), ctx, write=o.mode == "answer")
        except (SqlFailed, UnknownSource) as e:
            rule = e.rule if isinstance(e, SqlFailed) else "unknown_source"
            ctx.note("sql", source=o.source, ok=False, rule=rule)
            if o.on_error == "answer":
                text = f"I could not answer this from the database: {e}"
                ctx.short_circuit("sql", response=completion_with_sql(ctx, text, {"error": {"rule": rule}}))
            return
        r = got.result
        ctx.note("sql", source=o.source, ok=True, sql=r.sql, tables=r.tables, rows=len(r.rows),
                 truncated=r.truncated, attempts=len(got.attempts))  # fmt: skip
        if o.mode == "answer":
            ctx.short_circuit("sql", response=completion_with_sql(ctx, got.answer, got.to_dict()))
            return
        doc = {"id": f"sql:{o.source}", "document_id": f"sql:{o.source}", "source": o.source, "score": 1.0,
               "text": f"Rows from {', '.join(r.tables)} for the query:\n{r.sql}\n\n{rows_table(r.columns, r.rows)}",
               "sql": r.to_dict()}  # fmt: skip
        ctx.documents = [*(ctx.documents or []), doc]
