"""Introspection of a SQL source (SQLAlchemy's inspector): tables, columns, types, keys, sample values, row counts.

Cached as JSON under ``<state_dir>/sql/<source>.schema.json`` and read from there at start-up; ``portico sql refresh``
(or a missing cache) introspects again. Sample values and row counts are read through the same read-only,
time-limited path as questions are.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import inspect
from sqlglot import exp

from portico.config.sql import SqlSourceConfig
from portico.context.sql.engine import SqlEngine, SqlExecutionError

_TEXT_TYPES = ("CHAR", "TEXT", "STRING", "CLOB", "ENUM")


@dataclass(slots=True)
class ColumnInfo:
    name: str
    type: str
    primary_key: bool = False
    nullable: bool = True
    samples: list[Any] = field(default_factory=list)
    description: str = ""


@dataclass(slots=True)
class ForeignKey:
    columns: list[str]
    table: str  # referred table, as the allow-list names it
    referred: list[str]


@dataclass(slots=True)
class TableInfo:
    name: str  # as the allow-list names it: "table", or "schema.table" outside the default schema
    columns: list[ColumnInfo]
    foreign_keys: list[ForeignKey] = field(default_factory=list)
    row_count: int | None = None
    description: str = ""

    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(slots=True)
class SchemaInfo:
    source: str
    dialect: str
    default_schemas: list[str]
    tables: dict[str, TableInfo]
    refreshed_at: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(d: dict[str, Any]) -> SchemaInfo:
        tables = {}
        for name, t in d["tables"].items():
            tables[name] = TableInfo(
                name=t["name"], columns=[ColumnInfo(**c) for c in t["columns"]],
                foreign_keys=[ForeignKey(**f) for f in t["foreign_keys"]], row_count=t["row_count"],
                description=t.get("description", ""),
            )  # fmt: skip
        return SchemaInfo(d["source"], d["dialect"], d["default_schemas"], tables, d["refreshed_at"])


def cache_path(state_dir: str | Path, source: str) -> Path:
    return Path(state_dir) / "sql" / f"{source}.schema.json"


def _quoted_table(name: str) -> exp.Table:
    schema, _, table = name.rpartition(".")
    return exp.Table(this=exp.to_identifier(table, quoted=True),
                     db=exp.to_identifier(schema, quoted=True) if schema else None)  # fmt: skip


def _is_text(type_name: str) -> bool:
    up = type_name.upper()
    return any(t in up for t in _TEXT_TYPES)


def introspect(engine: SqlEngine, cfg: SqlSourceConfig) -> SchemaInfo:
    """Blocking: run in a thread."""
    insp = inspect(engine.engine)
    defaults = [s for s in (insp.default_schema_name,) if s]
    if engine.dialect == "sqlite":
        defaults.append("main")
    if cfg.tables is not None:
        names = list(cfg.tables)
    else:
        names = sorted(set(insp.get_table_names()) | set(insp.get_view_names()))
        names = [n for n in names if not n.lower().startswith("sqlite_")]
    default = defaults[0] if defaults else None
    tables: dict[str, TableInfo] = {}
    for name in names:
        schema, _, table = name.rpartition(".")
        sch = schema or None
        cols = insp.get_columns(table, schema=sch)
        if not cols:
            raise ValueError(f"sql source '{cfg.name}': table '{name}' does not exist or has no columns")
        pk = set((insp.get_pk_constraint(table, schema=sch) or {}).get("constrained_columns") or [])
        fks = []
        for fk in insp.get_foreign_keys(table, schema=sch):
            ref_schema = fk.get("referred_schema")
            ref = fk["referred_table"]
            if ref_schema and ref_schema != default:
                ref = f"{ref_schema}.{ref}"
            fks.append(ForeignKey(list(fk["constrained_columns"]), ref, list(fk["referred_columns"])))
        columns = [ColumnInfo(c["name"], str(c["type"]), c["name"] in pk, bool(c.get("nullable", True)),
                              description=cfg.descriptions.get(f"{name}.{c['name']}", "")) for c in cols]  # fmt: skip
        info = TableInfo(name, columns, fks, description=cfg.descriptions.get(name, ""))
        _read_stats(engine, info, cfg.sample_values)
        tables[name] = info
    # Foreign keys only count between allow-listed tables (a join path through a hidden table is no path).
    for t in tables.values():
        t.foreign_keys = [f for f in t.foreign_keys if f.table in tables]
    return SchemaInfo(cfg.name, engine.dialect, defaults, tables, time.time())


def _read_stats(engine: SqlEngine, info: TableInfo, samples: int) -> None:
    d = engine.dialect
    table = _quoted_table(info.name)
    try:
        info.row_count = int(engine.run(exp.select("COUNT(*)").from_(table).sql(dialect=d), 1).rows[0][0])
    except SqlExecutionError:
        info.row_count = None
    if samples <= 0:
        return
    for c in info.columns:
        if not _is_text(c.type):
            continue
        col = exp.column(exp.to_identifier(c.name, quoted=True))
        q = exp.select(col).distinct().from_(table).where(exp.Not(this=exp.Is(this=col.copy(), expression=exp.Null())))
        try:
            c.samples = [r[0] for r in engine.run(q.limit(samples).sql(dialect=d), samples).rows]
        except SqlExecutionError:
            c.samples = []


def load(state_dir: str | Path, source: str) -> SchemaInfo | None:
    path = cache_path(state_dir, source)
    if not path.exists():
        return None
    return SchemaInfo.from_json(json.loads(path.read_text()))


def save(state_dir: str | Path, info: SchemaInfo) -> Path:
    path = cache_path(state_dir, info.source)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(info.to_json(), default=str))
    tmp.replace(path)  # readers never see half a file
    return path
