"""Question → SQL → rows → answer, through the gateway: a dialect-aware prompt (chosen tables with their keys and
sample values, join paths, similar examples, the glossary), validation, read-only execution, and up to
``max_repairs`` further generations that see the rejection, the database error or the empty result. The answer is
written from the rows and always quotes the SQL and names the tables it read."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Any

from portico.context.sql.engine import SqlExecutionError
from portico.context.sql.retrieval import Example, JoinEdge
from portico.context.sql.service import SqlResult, SqlSource
from portico.context.sql.validate import Rejection
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest, Message
from portico.protocol.errors import InvalidRequest, PorticoError

DIALECT_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL", "mysql": "MariaDB/MySQL"}
_FENCE = re.compile(r"```(?:sql|SQL)?\s*\n?(.*?)```", re.S)
_START = re.compile(r"\b(WITH|SELECT)\b", re.I)
ROWS_IN_ANSWER_PROMPT = 30


class SqlFailed(InvalidRequest):
    """No attempt produced a query that passed the validator and ran; ``code`` is the last failure's rule."""

    def __init__(self, rule: str, message: str, attempts: list[dict[str, Any]]) -> None:
        super().__init__(message, code=rule)
        self.rule = rule
        self.attempts = attempts


@dataclass(slots=True)
class SqlAnswer:
    question: str
    result: SqlResult
    answer: str
    attempts: list[dict[str, Any]] = field(default_factory=list)  # each generation: sql, and its failure if any
    examples: list[str] = field(default_factory=list)  # questions of the examples shown
    chosen_tables: list[str] = field(default_factory=list)  # tables offered to the model

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "answer": self.answer, "attempts": self.attempts,
                "examples": self.examples, "chosen_tables": self.chosen_tables}  # fmt: skip


def extract_sql(reply: str) -> str:
    """The SQL in a model reply: a fenced block if there is one, else the text from the first WITH/SELECT."""
    m = _FENCE.search(reply)
    text = m.group(1) if m else reply
    start = _START.search(text)
    if start is not None and not m:
        text = text[start.start() :]
    return text.strip().rstrip(";").strip()


def describe_tables(source: SqlSource, tables: list[str], joins: list[JoinEdge]) -> str:
    assert source.schema is not None
    out = []
    for name in tables:
        t = source.schema.tables[name]
        head = f"TABLE {name}" + (f"  -- {t.description}" if t.description else "")
        if t.row_count is not None:
            head += f"  ({t.row_count} rows)"
        lines = [head]
        for c in t.columns:
            bits = [f"  {c.name} {c.type}"]
            if c.primary_key:
                bits.append("PRIMARY KEY")
            if c.description:
                bits.append(f"-- {c.description}")
            if c.samples:
                bits.append("e.g. " + ", ".join(repr(v) for v in c.samples))
            lines.append(" ".join(bits))
        for fk in t.foreign_keys:
            lines.append(f"  FOREIGN KEY ({', '.join(fk.columns)}) REFERENCES {fk.table}({', '.join(fk.referred)})")
        out.append("\n".join(lines))
    if joins:
        out.append("JOIN PATHS:\n" + "\n".join(f"  {j.condition()}" for j in joins))
    return "\n\n".join(out)


def build_prompt(source: SqlSource, question: str, tables: list[str], joins: list[JoinEdge],
                 examples: list[Example]) -> list[Message]:  # fmt: skip
    dialect = DIALECT_NAMES.get(source.dialect, source.dialect)
    system = (
        f"You write one {dialect} SELECT query that answers the user's question over the tables below. Use only "
        "these tables and columns; join them on the join paths given. Write string values exactly as in the sample "
        f"values. Reply with the SQL only, in a ```sql block. At most {source.cfg.max_rows} rows are returned."
    )
    parts = [describe_tables(source, tables, joins)]
    if source.cfg.glossary:
        parts.append("GLOSSARY:\n" + "\n".join(f"  {k}: {v}" for k, v in source.cfg.glossary.items()))
    if examples:
        parts.append("EXAMPLES:\n" + "\n".join(f"Question: {e.question}\nSQL: {e.sql}" for e in examples))
    parts.append(f"Question: {question}")
    return [Message(role="system", content=system), Message(role="user", content="\n\n".join(parts))]


def rows_table(columns: list[str], rows: list[list[Any]], limit: int = ROWS_IN_ANSWER_PROMPT) -> str:
    head = " | ".join(columns)
    body = "\n".join(" | ".join("" if v is None else str(v) for v in r) for r in rows[:limit])
    more = f"\n… {len(rows) - limit} more rows" if len(rows) > limit else ""
    return f"{head}\n{body}{more}"


def cite(answer: str, result: SqlResult) -> str:
    """The answer, the SQL that produced it and the tables it read (never left to the model)."""
    tables = ", ".join(result.tables) or "none"
    note = " (rows were cut at the source's row limit)" if result.truncated else ""
    return f"{answer.strip()}\n\nSQL{note}:\n```sql\n{result.sql}\n```\nTables: {tables}"


class SqlAnswerer:
    def __init__(self, gateway: Any, prices: Any = None) -> None:
        self.gateway = gateway
        self.prices = prices

    async def _chat(self, parent: RequestContext | None, model: str, messages: list[Message], tag: str,
                    max_tokens: int) -> str:  # fmt: skip
        request = ChatCompletionRequest(model=model, temperature=0, max_tokens=max_tokens, messages=messages)
        rid = f"{parent.request_id}-{tag}" if parent is not None else f"sql-{tag}"
        sub = RequestContext(request=request, request_id=rid, model=model)
        await self.gateway.chat(sub, model)
        if parent is not None and self.prices is not None:
            self.prices.charge(parent, "sql", model, sub.deployment, sub.usage)
        try:
            return (sub.response or {})["choices"][0]["message"].get("content") or ""
        except (KeyError, IndexError):
            return ""

    async def generate(self, source: SqlSource, question: str, model: str,
                       parent: RequestContext | None = None) -> tuple[SqlResult, list[dict[str, Any]], list[str],
                                                                      list[str]]:  # fmt: skip
        """(result, attempts, example questions, tables offered): generation with repairs; SqlFailed if none ran."""
        await source.open()
        assert source.selector is not None
        cfg = source.cfg
        vector = await source.vector(question)
        tables, joins = await source.selector.select(question, cfg.max_tables, vector)
        examples = await source.examples.search(question, cfg.examples, vector)
        messages = build_prompt(source, question, tables, joins, examples)
        attempts: list[dict[str, Any]] = []
        best: SqlResult | None = None
        for i in range(cfg.max_repairs + 1):
            reply = await self._chat(parent, model, messages, f"sql{i}", 320)
            sql = extract_sql(reply)
            attempt: dict[str, Any] = {"sql": sql}
            attempts.append(attempt)
            try:
                checked, rows = await source.run(sql)
            except Rejection as r:
                attempt.update(rule=r.rule, error=r.message)
                feedback = f"The query was rejected by the validator ({r.rule}): {r.message}"
            except SqlExecutionError as e:
                attempt.update(rule=e.rule, error=e.message)
                feedback = f"The database returned an error ({e.rule}): {e.message}"
            else:
                best = SqlResult(checked.sql, rows.columns, rows.rows, rows.truncated, list(checked.tables))
                attempt["rows"] = len(rows.rows)
                if rows.rows:
                    break
                attempt.update(rule="empty_result", error="the query returned no rows")
                feedback = ("The query ran but returned no rows. Check the conditions against the sample values "
                            "(spelling, case) and the joins; if no rows is the right answer, repeat the "
                            "query.")  # fmt: skip
                if len(attempts) > 1 and attempts[-2].get("sql") == sql:
                    break  # the model stands by its query: no rows is the answer
            messages = [*messages, Message(role="assistant", content=reply),
                        Message(role="user", content=f"{feedback}\nWrite the corrected query.")]  # fmt: skip
        if best is None:
            last = attempts[-1]
            raise SqlFailed(last["rule"], f"no valid query after {len(attempts)} attempt(s): {last['error']}",
                            attempts)  # fmt: skip
        return best, attempts, [e.question for e in examples], tables

    async def answer(self, source: SqlSource, question: str, model: str, parent: RequestContext | None = None,
                     write: bool = True) -> SqlAnswer:  # fmt: skip
        result, attempts, examples, tables = await self.generate(source, question, model, parent)
        text = "The query returned no rows." if not result.rows else rows_table(result.columns, result.rows)
        if write and result.rows:
            prompt = (f"Question: {question}\n\nRows returned by the database:\n"
                      f"{rows_table(result.columns, result.rows)}\n\nAnswer the question in one or two sentences "
                      "using only these rows.")  # fmt: skip
            with contextlib.suppress(PorticoError):  # then the rows themselves are the answer
                text = await self._chat(parent, model, [Message(role="user", content=prompt)], "answer", 256) or text
        return SqlAnswer(question, result, cite(text, result), attempts, examples, tables)
