"""The ``sql`` tool kind: answer a question from one configured SQL source (portico.context.sql) — table and example
retrieval, generation by the source's (or the application's) model, the validator, read-only execution, repairs.

Read-only by construction (the validator and a read-only transaction stand behind it), so it is never a write
tool. The model reads the SQL that ran, the rows and the tables it read; the result's ``data`` is the structured
``portico.sql`` result and its ``citations`` name the tables.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from portico.actions.tool import SingleTool, Tool, ToolContext, ToolResult
from portico.config.tools import ToolConfig
from portico.context.sql.generate import SqlAnswerer, SqlFailed, rows_table
from portico.context.sql.service import SqlSources, sql_of
from portico.pipeline.options import parse_options

PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"question": {"type": "string", "minLength": 1, "description": "The question, in plain words"}},
    "required": ["question"],
    "additionalProperties": False,
}


class SqlToolOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1)
    model: str | None = None  # writes the SQL; default: the source's model, else the application's, else the first
    max_rows_shown: int = Field(default=50, ge=1, le=1000)  # rows the model reads (data holds every fetched row)


class SqlTool(Tool):
    kind = "sql"

    def __init__(self, cfg: ToolConfig, options: SqlToolOptions, sources: SqlSources, services: Any) -> None:
        if cfg.write:
            raise ValueError(f"tool '{cfg.name}': sql tools are read-only; remove write: true")
        description = cfg.description or (f"Answer a question from the SQL database '{options.source}': returns the "
                                           "SQL that ran, its rows and the tables read")  # fmt: skip
        super().__init__(cfg.name, description, cfg.parameters or PARAMETERS, timeout=cfg.timeout)
        self.options = options
        self.sources = sources
        self.cfg = services.cfg
        self.answerer = SqlAnswerer(services.gateway, getattr(services, "prices", None))

    def public(self) -> dict[str, Any]:
        return {"source": self.options.source}

    def _model(self, ctx: ToolContext) -> str:
        chosen = self.options.model or self.sources.configs[self.options.source].model
        if chosen is None and ctx.application is not None:
            app = next((a for a in self.cfg.applications if a.name == ctx.application), None)
            chosen = app.model if app is not None else None
        return chosen or next(m.name for m in self.cfg.models if m.type == "chat")

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        question = str(arguments.get("question") or "").strip()
        source = self.sources.get(self.options.source)
        try:
            got = await self.answerer.answer(source, question, self._model(ctx), ctx.request, write=False)
        except SqlFailed as e:
            return ToolResult(f"No query could answer this ({e.rule}): {e.message}", is_error=True,
                              data={"error": {"rule": e.rule}, "attempts": e.attempts})  # fmt: skip
        r = got.result
        shown = rows_table(r.columns, r.rows, self.options.max_rows_shown) if r.rows else "(no rows)"
        cut = " (cut at the source's row limit)" if r.truncated else ""
        content = f"SQL{cut}:\n{r.sql}\n\nTables: {', '.join(r.tables)}\n\nRows:\n{shown}"
        citations = [{"id": f"sql:{self.options.source}/{t}", "title": t, "source": self.options.source}
                     for t in r.tables]  # fmt: skip
        return ToolResult(content, data=got.to_dict(), citations=citations)


def sql_kind(cfg: ToolConfig, services: Any) -> SingleTool:
    options = parse_options(SqlToolOptions, cfg.options)
    sources = sql_of(services)
    if options.source not in sources.names():
        raise ValueError(f"unknown sql source '{options.source}' (sql_sources: {sources.names()})")
    if options.model is not None and services.cfg.model(options.model) is None:
        raise ValueError(f"unknown model '{options.model}'")
    return SingleTool(SqlTool(cfg, options, sources, services))
