"""The SQL sources of a runtime, shared by the HTTP API, the pipeline step and the CLI.

A source opens lazily: its schema comes from the on-disk cache (or is introspected when there is none), then the
validator's policy, the table selector and the example store are built from it once, not per question.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from portico.config.sql import SqlSourceConfig
from portico.context.sql import schema as schema_cache
from portico.context.sql.engine import Rows, SqlEngine
from portico.context.sql.retrieval import Embed, ExampleStore, TableSelector
from portico.context.sql.schema import SchemaInfo
from portico.context.sql.validate import Policy, Validated, validate

_ATTR = "sql_sources"


class UnknownSource(KeyError):
    pass


@dataclass(slots=True)
class SqlResult:
    """The structured result (``portico.sql``)."""

    sql: str
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    tables: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"sql": self.sql, "columns": self.columns, "rows": self.rows, "truncated": self.truncated,
                "tables": self.tables}  # fmt: skip


class SqlSource:
    def __init__(self, cfg: SqlSourceConfig, state_dir: str | Path, embed: Embed | None) -> None:
        self.cfg = cfg
        self.state_dir = Path(state_dir)
        self.embed = embed
        self.engine = SqlEngine(cfg.url, cfg.timeout, cfg.max_rows)
        self.dialect = self.engine.dialect
        self.examples = ExampleStore(self.state_dir / "sql" / f"{cfg.name}.examples.jsonl", embed)
        self.schema: SchemaInfo | None = None
        self.policy: Policy | None = None
        self.selector: TableSelector | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.cfg.name

    async def open(self) -> None:
        """The cached schema, or a fresh introspection when there is no cache."""
        if self.schema is not None:
            return
        async with self._lock:
            if self.schema is None:
                cached = schema_cache.load(self.state_dir, self.name)
                if cached is None:
                    await self._refresh()
                else:
                    self._use(cached)

    async def refresh(self) -> SchemaInfo:
        async with self._lock:
            return await self._refresh()

    async def _refresh(self) -> SchemaInfo:
        info = await asyncio.to_thread(schema_cache.introspect, self.engine, self.cfg)
        await asyncio.to_thread(schema_cache.save, self.state_dir, info)
        self._use(info)
        return info

    def _use(self, info: SchemaInfo) -> None:
        columns = {n: t.column_names() for n, t in info.tables.items()}
        self.policy = Policy.build(self.dialect, info.tables, self.cfg.max_rows, columns, info.default_schemas)
        self.selector = TableSelector(info, self.embed)
        self.schema = info

    def validate(self, sql: str) -> Validated:
        """Raises Rejection; the source must be open."""
        assert self.policy is not None, "open() the source first"
        return validate(sql, self.policy)

    async def run(self, sql: str) -> tuple[Validated, Rows]:
        """Validate, then execute read-only (Rejection / SqlExecutionError on failure)."""
        await self.open()
        checked = self.validate(sql)
        return checked, await self.engine.execute(checked.sql)

    async def vector(self, text: str) -> np.ndarray | None:
        return None if self.embed is None else (await self.embed([text]))[0]

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)


class SqlSources:
    def __init__(self, configs: list[SqlSourceConfig], state_dir: str | Path, embed: Embed | None) -> None:
        self.configs = {c.name: c for c in configs}
        self.state_dir = state_dir
        self.embed = embed
        self._open: dict[str, SqlSource] = {}

    def names(self) -> list[str]:
        return list(self.configs)

    def get(self, name: str) -> SqlSource:
        src = self._open.get(name)
        if src is None:
            cfg = self.configs.get(name)
            if cfg is None:
                raise UnknownSource(name)
            src = self._open[name] = SqlSource(cfg, self.state_dir, self.embed)
        return src

    async def close(self) -> None:
        for s in self._open.values():
            await s.close()
        self._open.clear()


def sql_of(services: Any) -> SqlSources:
    """The runtime's one SqlSources (made on first use, closed with the runtime)."""
    sources = getattr(services, _ATTR, None)
    if sources is None:
        cfg = services.cfg
        embed = services.embedder.embed if cfg.embedder_model is not None else None
        sources = SqlSources(cfg.sql_sources, cfg.state_dir, embed)
        setattr(services, _ATTR, sources)
        services.on_close(sources.close)
    return sources
