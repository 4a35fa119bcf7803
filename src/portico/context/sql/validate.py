"""The validator: the security boundary between generated (or client) SQL and a database.

SQL is parsed into sqlglot's syntax tree in the source's dialect — never matched with regexes — and is allowed only
when the tree is exactly one read-only query over allow-listed tables. What is executed is the SQL *regenerated from
the checked tree* (comments dropped, a LIMIT enforced), never the text as it came in: a MySQL ``/*! … */`` comment,
which MySQL would execute, cannot survive, and what runs is what was checked. Every rejection names a stable rule id.

Not the only line of defence: execution also runs in a read-only transaction with a statement timeout and a row cap
(see execute.py), and operators should connect with a read-only database user.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

logging.getLogger("sqlglot").setLevel(logging.ERROR)  # "falling back to a Command" warnings: we reject those anyway

Dialect = str  # sqlglot dialect name: "sqlite", "postgres", "mysql"

# Statement kinds that change data, schema, session or server state, or run other code. Any of them anywhere in the
# tree rejects the query (a data-modifying CTE is a write). Looked up by name: sqlglot versions add and rename some.
_WRITE_NODES = ("Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "AlterTable", "TruncateTable",
                "Grant", "Revoke", "Comment", "Analyze", "Transaction", "Commit", "Rollback", "LoadData", "Use",
                "Refresh", "Cache", "Uncache", "Kill", "Describe", "Show", "Summarize")  # fmt: skip
_COMMAND_NODES = ("Command", "Pragma", "Attach", "Detach", "Set", "SetItem", "Copy", "Execute", "Declare", "Export",
                  "Install")  # fmt: skip


def _classes(names: Iterable[str]) -> tuple[type[exp.Expression], ...]:
    return tuple(c for c in (getattr(exp, n, None) for n in names) if isinstance(c, type))


WRITES = _classes(_WRITE_NODES)
COMMANDS = _classes(_COMMAND_NODES)
QUERY_ROOTS = _classes(("Select", "Union", "Intersect", "Except", "SetOperation", "Subquery"))

# Functions with side effects, file/network/process access, lock or sleep behaviour, or that run SQL text; per
# dialect. Lower-case names; a trailing '*' denies a prefix.
_COMMON_DENY = {"sleep", "benchmark", "load_file", "load_extension", "readfile", "writefile", "lo_*", "dblink*"}
DENIED_FUNCTIONS: dict[str, frozenset[str]] = {
    "postgres": frozenset(
        _COMMON_DENY
        | {
            "pg_*",  # pg_sleep, pg_read_file, pg_ls_dir, pg_stat_file, pg_terminate_backend, pg_advisory_lock, …
            "set_config",
            "current_setting",
            "nextval",
            "setval",
            "currval",
            "lastval",
            "txid_current",
            "query_to_xml*",
            "table_to_xml*",
            "cursor_to_xml*",
            "database_to_xml*",
            "schema_to_xml*",
            "copy",
            "version",
            "inet_server_addr",
            "inet_client_addr",
            "generate_series",
            "repeat",
            "explodinggenerateseries",
            "exploding_generate_series",
            "unnest_generate_series",
        }
    ),
    "mysql": frozenset(
        _COMMON_DENY
        | {
            "get_lock",
            "release_lock",
            "release_all_locks",
            "is_free_lock",
            "is_used_lock",
            "master_pos_wait",
            "source_pos_wait",
            "sys_exec",
            "sys_eval",
            "last_insert_id",
            "uuid_short",
            "version",
            "database",
            "user",
            "current_user",
            "session_user",
            "system_user",
            "connection_id",
            "found_rows",
            "row_count",
            "repeat",
            "space",
            "rpad",
            "lpad",
            "name_const",
            "extractvalue",
            "updatexml",
            "gtid_*",
            "wait_for_executed_gtid_set",
        }
    ),
    "sqlite": frozenset(
        _COMMON_DENY
        | {
            "edit",
            "fts3_tokenizer",
            "randomblob",
            "zeroblob",
            "sqlite_*",
            "load_extension",
            "zipfile",
            "sqlar_*",
            "changes",
            "total_changes",
            "last_insert_rowid",
            "generate_series",
            "explodinggenerateseries",
        }
    ),
}
# System catalogs: readable only when a source's allow-list names them (listed for the error message).
CATALOG_SCHEMAS = {"information_schema", "pg_catalog", "pg_toast", "mysql", "performance_schema", "sys"}


@dataclass(frozen=True, slots=True)
class Rejection(Exception):
    """A query the validator will not run: ``rule`` is a stable id, ``message`` says what and where."""

    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


@dataclass(frozen=True, slots=True)
class Validated:
    sql: str  # what will run: regenerated from the checked tree, comments dropped, LIMIT enforced
    tables: tuple[str, ...]  # allow-listed tables it reads, as the allow-list names them
    limited: bool  # a LIMIT was added or lowered


@dataclass(frozen=True, slots=True)
class Policy:
    """What one source allows. ``tables`` maps a resolved reference (see ``resolve``) to the allow-list name;
    ``columns`` maps allow-list names to their column names (lower-case), or is None to skip the column check."""

    dialect: Dialect
    tables: dict[tuple[str, str], str]  # (schema or "", table) as the database resolves them → allow-list name
    columns: dict[str, frozenset[str]] | None
    max_rows: int
    default_schemas: frozenset[str] = frozenset({""})  # a schema qualifier equal to one of these is the default

    @staticmethod
    def build(dialect: Dialect, tables: Iterable[str], max_rows: int, columns: dict[str, Iterable[str]] | None = None,
              default_schemas: Iterable[str] = ()) -> Policy:  # fmt: skip
        keyed: dict[tuple[str, str], str] = {}
        for name in tables:
            schema, _, table = name.rpartition(".")
            keyed[(_fold(dialect, schema), _fold(dialect, table))] = name
        cols = None if columns is None else {t: frozenset(c.lower() for c in cs) for t, cs in columns.items()}
        defaults = frozenset({"", *(_fold(dialect, s) for s in default_schemas)})
        return Policy(dialect, keyed, cols, max_rows, defaults)


def _fold(dialect: Dialect, name: str, quoted: bool = True) -> str:
    """How the database compares a name: SQLite ignores case; PostgreSQL folds unquoted names to lower case
    (quoted ones are exact); MySQL/MariaDB table names are case-sensitive on Linux."""
    if dialect == "sqlite":
        return name.lower()
    if dialect == "postgres" and not quoted:
        return name.lower()
    return name


def _ident(dialect: Dialect, node: exp.Expression | None) -> str:
    if node is None:
        return ""
    if isinstance(node, exp.Identifier):
        return _fold(dialect, node.name, bool(node.args.get("quoted")))
    return _fold(dialect, node.name, False)


def parse_one(sql: str, dialect: Dialect) -> exp.Expression:
    """Exactly one statement, or a Rejection."""
    if not sql or not sql.strip():
        raise Rejection("empty", "no SQL was given")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None and not _is_semicolon(s)]
    except (ParseError, TokenError) as e:
        first = str(e).splitlines()[0][:200]
        raise Rejection("parse_error", f"the SQL does not parse as {dialect}: {first}") from None
    if not statements:
        raise Rejection("empty", "no SQL statement was given")
    if len(statements) > 1:
        raise Rejection("multiple_statements", f"exactly one statement is allowed, got {len(statements)}")
    return statements[0]


_SEMICOLON = getattr(exp, "Semicolon", None)


def _is_semicolon(node: exp.Expression) -> bool:
    return _SEMICOLON is not None and isinstance(node, _SEMICOLON)


def _function_names(node: exp.Func) -> set[str]:
    if isinstance(node, exp.Anonymous):
        return {node.name.lower()}
    names = {type(node).__name__.lower(), node.key.lower()}
    names.update(n.lower() for n in getattr(type(node), "_sql_names", ()) or ())
    return names


def _denied(names: set[str], deny: frozenset[str]) -> str | None:
    for name in names:
        if name in deny:
            return name
        for d in deny:
            if d.endswith("*") and name.startswith(d[:-1]):
                return name
    return None


def _cte_visible(table: exp.Table, name: str, dialect: Dialect) -> bool:
    """True when ``table`` (unqualified) names a CTE in scope: one defined by an enclosing WITH, and — inside that
    WITH's own CTE bodies — only the CTEs defined before the body it is in (a non-recursive CTE cannot see itself,
    so ``WITH secret AS (SELECT * FROM secret)`` reads the real table ``secret`` and is checked as one)."""
    child: exp.Expression = table
    node = table.parent
    while node is not None:
        with_ = (node.args.get("with_") or node.args.get("with")) if isinstance(node, exp.Query) else None
        if isinstance(with_, exp.With):
            ctes = list(with_.expressions)
            limit = len(ctes)
            if child is with_:  # we came up through one of this WITH's CTE bodies
                limit = next((i for i, c in enumerate(ctes) if _contains(c, table)), len(ctes))
            if any(_ident(dialect, c.args["alias"].this) == name for c in ctes[:limit] if c.args.get("alias")):
                return True
        child, node = node, node.parent
    return False


def _contains(root: exp.Expression, node: exp.Expression) -> bool:
    n: exp.Expression | None = node
    while n is not None:
        if n is root:
            return True
        n = n.parent
    return False


def _check_tree(tree: exp.Expression, policy: Policy) -> list[str]:
    """Every rule over the whole tree; returns the allow-list names of the tables read."""
    d = policy.dialect
    deny = DENIED_FUNCTIONS.get(d, frozenset(_COMMON_DENY))
    used: list[str] = []
    aliases: set[str] = set()
    tables: list[exp.Table] = []
    columns: list[exp.Column] = []
    for node in tree.walk():
        for c in node.comments or ():
            # MySQL runs /*! … */ as code, and a hidden ';' is an injection's hallmark: neither is a plain comment.
            if c.lstrip().startswith("!") or ";" in c:
                raise Rejection("comment", "executable comments (/*! … */) and comments holding ';' are not allowed")
        if isinstance(node, exp.Hint):
            raise Rejection("hint", "optimizer hints (/*+ … */) are not allowed: they can lift the statement timeout")
        if isinstance(node, WRITES):
            raise Rejection("write", f"{node.key.upper()} is not allowed: only SELECT queries run (anywhere in the "
                            "statement, CTEs included)")  # fmt: skip
        if isinstance(node, COMMANDS):
            raise Rejection("command", f"{node.key.upper()} statements (PRAGMA, ATTACH, SET, COPY, CALL, …) are "
                            "not allowed")  # fmt: skip
        if isinstance(node, exp.Into):
            raise Rejection("select_into", "SELECT … INTO writes a table or a file: not allowed")
        if isinstance(node, exp.Lock):
            raise Rejection("locking_clause", "locking clauses (FOR UPDATE / FOR SHARE / LOCK IN SHARE MODE) are "
                            "not allowed")  # fmt: skip
        if isinstance(node, exp.With) and node.args.get("recursive"):
            raise Rejection("recursive_cte", "WITH RECURSIVE is not allowed (unbounded work)")
        if isinstance(node, exp.SessionParameter | exp.Parameter | exp.Placeholder):
            raise Rejection("variable", f"variables and parameters are not allowed: {node.sql(dialect=d)[:60]}")
        if isinstance(node, exp.PropertyEQ):
            raise Rejection("variable", "assignments (:=) are not allowed")
        if isinstance(node, exp.Dot) and isinstance(node.expression, exp.Func):
            raise Rejection("qualified_function", f"schema-qualified function calls are not allowed: "
                            f"{node.sql(dialect=d)[:80]}")  # fmt: skip
        if isinstance(node, exp.Func):
            bad = _denied(_function_names(node), deny)
            if bad is not None:
                raise Rejection("denied_function", f"function {bad.upper()} is not allowed on {d} (side effects, "
                                "file/network access, sleeping or server state)")  # fmt: skip
        if isinstance(node, exp.Table):
            tables.append(node)
        elif isinstance(node, exp.Column):
            columns.append(node)
        elif isinstance(node, exp.Alias | exp.TableAlias):
            if node.args.get("alias") is not None:
                aliases.add(node.alias.lower())
            if isinstance(node, exp.TableAlias):
                aliases.update(c.name.lower() for c in node.args.get("columns") or [])
    for t in tables:
        if not isinstance(t.this, exp.Identifier):
            raise Rejection("table_function", f"table functions are not allowed in FROM: {t.sql(dialect=d)[:80]}")
        name, schema = _ident(d, t.this), _ident(d, t.args.get("db"))
        if t.args.get("catalog") is not None:
            raise Rejection("table_not_allowed", f"cross-database references are not allowed: {t.sql(dialect=d)}")
        if not schema and _cte_visible(t, name, d):
            continue
        allowed = policy.tables.get((schema, name))
        if allowed is None and schema in policy.default_schemas:
            allowed = policy.tables.get(("", name))
        if allowed is None:
            what = "system catalog" if (schema or name).lower() in CATALOG_SCHEMAS or name.lower().startswith(
                ("sqlite_", "pg_", "pragma_")) else "table"  # fmt: skip
            raise Rejection("table_not_allowed", f"{what} {t.sql(dialect=d)} is not in this source's allow-list")
        used.append(allowed)
    if policy.columns is not None:
        known = set(aliases)
        for tname in used:
            known |= policy.columns.get(tname, frozenset())
        for c in columns:
            if isinstance(c.this, exp.Star) or not c.name or c.name.lower() in known:
                continue
            if d == "sqlite" and not c.table and c.this.args.get("quoted"):
                # SQLite reads a double-quoted name that is no column as a string ("arizona"): say so explicitly.
                c.replace(exp.Literal.string(c.name))
            else:
                raise Rejection("unknown_column", f"column {c.sql(dialect=d)} is not a column of the allowed "
                                f"tables {sorted(set(used))}")  # fmt: skip
    return used


def _enforce_limit(tree: exp.Expression, max_rows: int) -> bool:
    """Add a LIMIT, or lower one above ``max_rows`` (a non-literal LIMIT or a FETCH becomes ``max_rows``). Callers
    pass the source's max_rows + 1: the one extra row tells execution that the result was cut (``truncated``)."""
    target = tree.this if isinstance(tree, exp.Subquery) and not tree.args.get("limit") else tree
    limit = target.args.get("limit")
    n: int | None = None
    if isinstance(limit, exp.Limit) and isinstance(limit.expression, exp.Literal) and limit.expression.is_int:
        n = int(limit.expression.name)
    if n is not None and n <= max_rows:
        return False
    target.set("limit", exp.Limit(expression=exp.Literal.number(max_rows)))
    return True


def validate(sql: str, policy: Policy) -> Validated:
    """The SQL to run, or a Rejection naming the rule."""
    tree = parse_one(sql, policy.dialect)
    if not isinstance(tree, QUERY_ROOTS):
        rule = "write" if isinstance(tree, WRITES) else "command" if isinstance(tree, COMMANDS) else "not_select"
        raise Rejection(rule, f"only SELECT queries are allowed, got {tree.key.upper()}")
    used = _check_tree(tree, policy)
    limited = _enforce_limit(tree, policy.max_rows + 1)
    out = tree.sql(dialect=policy.dialect, comments=False)
    # Parser differential guard: what we emit must parse back to the same query, or we do not run it.
    again = parse_one(out, policy.dialect)
    if again.sql(dialect=policy.dialect, comments=False) != out:
        raise Rejection("unstable_sql", "the query does not survive a parse/print round trip unchanged")
    return Validated(out, tuple(dict.fromkeys(used)), limited)
