"""``portico sql refresh|train|validate|query``: operate SQL sources with the same ``--config`` as ``serve``."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from portico.cli_config import load_for_cli
from portico.config import PorticoConfig

if TYPE_CHECKING:  # the SQL stack (SQLAlchemy, sqlglot, BM25) loads only when a `portico sql` command runs
    from portico.context.sql.retrieval import Example
    from portico.context.sql.service import SqlSource

sql_app = typer.Typer(no_args_is_help=True, help="Questions over SQL: refresh schemas, add examples, check SQL.")
out = Console()
err = Console(stderr=True)
ConfigOpt = Annotated[str | None, typer.Option("--config", "-c", help="YAML config file (as for serve)")]
SourceArg = Annotated[str, typer.Argument(help="Name of a source under sql_sources:")]
BLOCKED = 3  # exit code of `validate` for SQL the validator rejects


_config = load_for_cli  # the main CLI's loader (exit 2 on a bad config)


def _source(cfg: PorticoConfig, name: str) -> SqlSource:
    from portico.context.sql.service import SqlSources, UnknownSource

    try:
        return SqlSources(cfg.sql_sources, cfg.state_dir, None).get(name)  # no embedder: nothing here searches
    except UnknownSource:
        known = ", ".join(s.name for s in cfg.sql_sources) or "none configured"
        err.print(f"[red]error:[/red] unknown sql source '{name}' (known: {known})", highlight=False)
        raise typer.Exit(2) from None


async def _opened(src: SqlSource, refresh: bool = False) -> None:
    try:
        await (src.refresh() if refresh else src.open())
    except Exception as e:  # the database is down, a configured table is missing, …
        await src.close()
        err.print(f"[red]error:[/red] sql source '{src.name}': {str(e).splitlines()[0]}", highlight=False)
        raise typer.Exit(1) from None


@sql_app.command("refresh")
def refresh(source: SourceArg, config: ConfigOpt = None) -> None:
    """Introspect the source again (tables, columns, keys, sample values, row counts) and update the cache."""

    async def go() -> None:
        src = _source(_config(config), source)
        await _opened(src, refresh=True)
        assert src.schema is not None
        for t in src.schema.tables.values():
            out.print(f"{t.name}: {len(t.columns)} columns, {t.row_count} rows, {len(t.foreign_keys)} foreign keys",
                      highlight=False)  # fmt: skip
        await src.close()

    asyncio.run(go())


@sql_app.command("validate")
def validate_cmd(source: SourceArg, sql: Annotated[str, typer.Argument(help="The SQL to check")],
                 config: ConfigOpt = None) -> None:  # fmt: skip
    """Check SQL as a question's SQL would be checked: prints the SQL that would run (exit 0), or the rule that
    blocks it (exit 3)."""

    from portico.context.sql.validate import Rejection

    async def go() -> int:
        src = _source(_config(config), source)
        await _opened(src)
        await src.close()
        try:
            checked = src.validate(sql)
        except Rejection as r:
            err.print(f"blocked: {r.rule}: {r.message}", highlight=False, markup=False)
            return BLOCKED
        print(checked.sql)
        return 0

    raise typer.Exit(asyncio.run(go()))


def read_examples(path: Path) -> list[Example]:
    from portico.context.sql.retrieval import Example

    rows: list[Example] = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row: Any = json.loads(line)
            q, s = row["question"], row["sql"]
            if not isinstance(q, str) or not isinstance(s, str) or not q.strip() or not s.strip():
                raise ValueError
        except (ValueError, KeyError, TypeError):
            raise typer.BadParameter(f"{path}:{n}: need a JSON object with 'question' and 'sql' strings") from None
        rows.append(Example(q.strip(), s.strip()))
    return rows


@sql_app.command("train")
def train(source: SourceArg,
          examples: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSON lines: question, sql")],
          config: ConfigOpt = None) -> None:  # fmt: skip
    """Add question→SQL examples to the source's example store; each example's SQL must pass the validator."""
    from portico.context.sql.validate import Rejection

    async def go() -> int:
        src = _source(_config(config), source)
        await _opened(src)
        await src.close()
        good: list[Example] = []
        bad = 0
        for ex in read_examples(examples):
            try:
                src.validate(ex.sql)
            except Rejection as r:
                bad += 1
                err.print(f"skipped ({r.rule}): {ex.question}", highlight=False, markup=False)
                continue
            good.append(ex)
        src.examples.add(good)
        out.print(f"{len(good)} examples added, {bad} skipped; the store holds {len(src.examples.examples)}",
                  highlight=False)  # fmt: skip
        return 1 if bad and not good else 0

    raise typer.Exit(asyncio.run(go()))


@sql_app.command("query")
def query(source: SourceArg, question: Annotated[str, typer.Argument(help="A question, or SQL with --sql")],
          config: ConfigOpt = None, sql: Annotated[bool, typer.Option("--sql", help="Run SQL, no model")] = False,
          model: Annotated[str | None, typer.Option(help="Chat model (default: the source's, or the first)")] = None,
          as_json: Annotated[bool, typer.Option("--json", help="Print the structured result")] = False,
          ) -> None:  # fmt: skip
    """Answer a question from the source in-process (or run SQL with --sql)."""
    from portico.context.sql.engine import SqlExecutionError
    from portico.context.sql.generate import SqlAnswerer, SqlFailed, rows_table
    from portico.context.sql.service import sql_of
    from portico.context.sql.validate import Rejection
    from portico.runtime import Runtime

    cfg = _config(config)
    _source(cfg, source)  # fail fast on an unknown name

    async def go() -> int:
        rt = Runtime(cfg)
        await rt.start()
        try:
            src = sql_of(rt).get(source)
            await _opened(src)
            if sql:
                checked, rows = await src.run(question)
                result: dict[str, Any] = {"sql": checked.sql, "columns": rows.columns, "rows": rows.rows,
                                          "truncated": rows.truncated, "tables": list(checked.tables)}  # fmt: skip
                text = rows_table(rows.columns, rows.rows, 1000)
            else:
                chat = model or src.cfg.model or next(m.name for m in cfg.models if m.type == "chat")
                got = await SqlAnswerer(rt.gateway, rt.prices).answer(src, question, chat)
                result, text = got.to_dict(), got.answer
            print(json.dumps(result, default=str) if as_json else text)
            return 0
        except Rejection as r:
            err.print(f"blocked: {r.rule}: {r.message}", highlight=False, markup=False)
            return BLOCKED
        except (SqlExecutionError, SqlFailed) as e:
            err.print(f"error: {e}", highlight=False, markup=False)
            return 1
        finally:
            await rt.close()

    raise typer.Exit(asyncio.run(go()))
