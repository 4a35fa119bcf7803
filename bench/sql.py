"""Questions over SQL: retrieval quality, execution accuracy and the validator's safety and speed, in one run.

Data: Kummerfeld et al.'s GeoQuery and Restaurants (text2sql-data, SQLite) from $PORTICO_DATA/text2sql (default
../shared/data). Both of their splits are reported: ``question_split`` and the harder ``query_split``, where no test
SQL template appears in training. GeoQuery has train/dev/test parts (examples from train, figures on test);
Restaurants has ten folds (each fold is the test part once, examples from the other nine). Restaurants' gold SQL
names ``RESTAURANT.ID`` where the 2020 SQLite file has ``RESTAURANT_ID``; that one rename is applied.

- table recall@k: share of the gold query's tables among the k tables Portico's hybrid table search picks;
- example hit@k: the gold query's template (query_group) is among the k retrieved training examples;
- exec_acc_template: model-free baseline, the nearest example's SQL with its literals replaced by the database
  values (and numbers) the test question mentions, run through the validator;
- exec_acc_local: the full pipeline (tables, examples, generation, validation, repair) with the embedded local model
  (SmolLM2-135M, an honest floor) on the first $PORTICO_SQL_BENCH_LOCAL_N test questions per dataset and split
  (Restaurants: fold 0); set PORTICO_SQL_BENCH_URL / _MODEL / _KEY for an OpenAI-compatible model's figure;
- safety: bench/sql_attacks (attacks and legitimate SELECTs over three dialects) through the validator, beside
  LangChain's ``SQLDatabase.run``, which executes what it is given (we count the statements it hands to the driver);
- validation latency over the corpus and the gold SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import sqlglot
from sqlglot import exp

from portico.config.schema import PorticoConfig
from portico.context.sql.engine import SqlExecutionError
from portico.context.sql.generate import SqlAnswerer, SqlFailed
from portico.context.sql.retrieval import Example, ExampleStore
from portico.context.sql.service import SqlSource, sql_of
from portico.context.sql.validate import Policy, Rejection, validate
from portico.protocol.errors import PorticoError
from portico.runtime import Runtime

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("PORTICO_DATA", str(ROOT.parent / "shared" / "data"))) / "text2sql" / \
    "text2sql_data_kummerfeld"  # fmt: skip
CORPUS = ROOT / "bench" / "sql_attacks"
OUT = ROOT / "bench" / "results" / "sql.md"
DBS = {"geography": "geography-db.added-in-2020.sqlite", "restaurants": "restaurants-db.added-in-2020.sqlite"}
SPLITS = ("question_split", "query_split")
LOCAL_N = int(os.environ.get("PORTICO_SQL_BENCH_LOCAL_N", "20"))
KS = (1, 2, 3)
T0 = time.time()
_RESTAURANT_ID = re.compile(r"(RESTAURANTalias\d+)\.ID\b")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")
# The corpus' schema (bench/sql_attacks): what the allow-list holds; `secrets` exists but is not allow-listed.
CORPUS_COLUMNS = {"customers": ["id", "name", "city", "email"],
                  "orders": ["id", "customer_id", "total", "status", "placed_at"],
                  "products": ["id", "name", "price", "category"],
                  "order_items": ["order_id", "product_id", "quantity"]}  # fmt: skip
CORPUS_DEFAULT_SCHEMA = {"sqlite": ["main"], "postgres": ["public"], "mysql": ["shop"]}


def rows_key(rows: list[Any]) -> Counter:
    def norm(v: Any) -> Any:
        return round(float(v), 4) if isinstance(v, int | float) and not isinstance(v, bool) else v

    return Counter(tuple(norm(v) for v in r) for r in rows)


def load(ds: str) -> list[dict[str, Any]]:
    """Questions whose gold SQL runs on the SQLite file, with the gold result and tables."""
    db = sqlite3.connect(f"file:{DATA / DBS[ds]}?mode=ro", uri=True)
    out = []
    for line in (DATA / f"{ds}_flat.jsonl").read_text().splitlines():
        r = json.loads(line)
        sql = _RESTAURANT_ID.sub(r"\1.RESTAURANT_ID", r["gold_sql"]) if ds == "restaurants" else r["gold_sql"]
        try:
            r["gold_rows"] = rows_key(db.execute(sql).fetchall())
        except sqlite3.Error:
            continue
        r["gold_sql"] = sql
        tree = sqlglot.parse_one(sql, read="mysql")  # Kummerfeld's SQL quotes strings with "…" (MySQL style)
        r["gold_tables"] = {t.name.lower() for t in tree.find_all(exp.Table)}
        out.append(r)
    db.close()
    return out


def parts(ds: str, rows: list[dict[str, Any]], split: str) -> list[tuple[str, list[dict], list[dict]]]:
    """(name, train, test) for each test part of a split."""
    if ds == "geography":
        return [("test", [r for r in rows if r[split] == "train"], [r for r in rows if r[split] == "test"])]
    folds = sorted({r[split] for r in rows})
    return [(f"fold {f}", [r for r in rows if r[split] != f], [r for r in rows if r[split] == f]) for f in folds]


def value_index(ds: str) -> dict[str, set[str]]:
    """Every text value of the database (lower-case) → the columns it occurs in."""
    db = sqlite3.connect(f"file:{DATA / DBS[ds]}?mode=ro", uri=True)
    index: dict[str, set[str]] = {}
    for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        for col in db.execute(f'PRAGMA table_info("{table}")').fetchall():
            for (v,) in db.execute(f'SELECT DISTINCT "{col[1]}" FROM "{table}"').fetchall():
                if isinstance(v, str) and v.strip() and not v.strip().isdigit():
                    index.setdefault(v.lower(), set()).add(col[1].lower())
    db.close()
    return index


def mentions(question: str, index: dict[str, set[str]], longest: int = 4) -> list[str]:
    words = question.lower().replace("?", " ").split()
    found, i = [], 0
    while i < len(words):
        for n in range(min(longest, len(words) - i), 0, -1):
            phrase = " ".join(words[i : i + n])
            if phrase in index:
                found.append(phrase)
                i += n
                break
        else:
            i += 1
    return found


def substitute(sql: str, ex_question: str, question: str, index: dict[str, set[str]]) -> str:
    """The example's SQL with its string literals replaced by values the new question mentions (a value of the same
    column first) and its numbers by the new question's numbers; literals the new question repeats are kept."""
    tree = sqlglot.parse_one(sql, read="mysql")
    said = mentions(question, index)
    numbers = _NUMBER.findall(question)
    ex_numbers = set(_NUMBER.findall(ex_question))
    used: set[str] = set()
    for lit in list(tree.find_all(exp.Literal)):
        value = lit.this
        if lit.is_string:
            if value.lower() in said:
                used.add(value.lower())
                continue
            other = lit.parent.left if isinstance(lit.parent, exp.Binary) and lit.parent.right is lit else None
            col = other.name.lower() if isinstance(other, exp.Column) else None
            pool = [v for v in said if v not in used]
            fits = [v for v in pool if col is None or col in index.get(v, set())] or pool
            if fits:
                used.add(fits[0])
                lit.replace(exp.Literal.string(fits[0]))
        elif value in ex_numbers and numbers:
            lit.replace(exp.Literal.number(numbers.pop(0)))
    return tree.sql(dialect="sqlite")


def cached(embed: Any) -> Any:
    memo: dict[str, np.ndarray] = {}

    async def run(texts: list[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing:
            for t, v in zip(missing, await embed(missing), strict=True):
                memo[t] = v
        return np.stack([memo[t] for t in texts]) if texts else np.zeros((0, 0), dtype=np.float32)

    return run


def config(state: Path) -> PorticoConfig:
    models: list[dict[str, Any]] = [
        {"name": "local", "deployments": [{"provider": "local", "n_ctx": 4096}]},
        {"name": "local-embed", "type": "embedding", "deployments": [{"provider": "local"}]},
    ]
    if os.environ.get("PORTICO_SQL_BENCH_URL"):
        models.append({"name": "remote", "deployments": [{"provider": "openai", "base_url": os.environ[
            "PORTICO_SQL_BENCH_URL"], "model": os.environ.get("PORTICO_SQL_BENCH_MODEL", "gpt-4o-mini"),
            "api_key": os.environ.get("PORTICO_SQL_BENCH_KEY", "x")}]})  # fmt: skip
    # A wrong guess can be a huge join: 3 s bounds it (every gold query runs in well under a second).
    sources = [{"name": ds, "url": f"sqlite:///{DATA / f}", "max_rows": 1000, "timeout": 3, "max_repairs": 1,
                "examples": 3, "max_tables": 3} for ds, f in DBS.items()]  # fmt: skip
    return PorticoConfig.model_validate({"state_dir": str(state), "cache": {"enabled": False}, "models": models,
                                         "sql_sources": sources})  # fmt: skip


async def run_sql(src: SqlSource, sql: str) -> Counter | None:
    try:
        _, rows = await src.run(sql)
    except (Rejection, SqlExecutionError):
        return None
    return rows_key(rows.rows)


async def evaluate(rt: Runtime, ds: str, split: str, embed: Any, models: list[str]) -> dict[str, Any]:
    src = sql_of(rt).get(ds)
    await src.open()
    assert src.selector is not None
    rows = load(ds)
    index = value_index(ds)
    recall = {k: [] for k in KS}
    hit = {k: [] for k in (1, 3, 5)}
    template: list[bool] = []
    gold_valid: list[bool] = []
    model_acc: dict[str, list[bool]] = {m: [] for m in models}
    for p, (name, train, test) in enumerate(parts(ds, rows, split)):
        store = ExampleStore(Path(tempfile.mkdtemp()) / "ex.jsonl", embed)
        store.add([Example(r["question"], r["gold_sql"]) for r in train])
        group = {r["question"]: r["query_group"] for r in train}
        for r in test:
            vec = (await embed([r["question"]]))[0]
            found = await src.selector.index.search(r["question"], max(KS), vec)
            ranked = [src.selector.names[i].lower() for i, _ in found]
            for k in KS:
                recall[k].append(len(r["gold_tables"] & set(ranked[:k])) / len(r["gold_tables"]))
            got = await store.search(r["question"], 5, vec)
            for k in hit:
                hit[k].append(r["query_group"] in {group[e.question] for e in got[:k]})
            try:
                src.validate(sqlglot.transpile(r["gold_sql"], read="mysql", write="sqlite")[0])
                gold_valid.append(True)
            except Rejection:
                gold_valid.append(False)
            guess = substitute(got[0].sql, got[0].question, r["question"], index)
            template.append(await run_sql(src, guess) == r["gold_rows"])
        print(f"  {ds} {split} {name}: {len(test)} questions, {time.time() - T0:.0f} s", file=sys.stderr, flush=True)
        if p == 0:  # the model runs on the first part only (Restaurants: fold 0), first LOCAL_N questions
            src.examples = store
            for m in models:
                for r in test[:LOCAL_N]:
                    try:
                        res = (await SqlAnswerer(rt.gateway).generate(src, r["question"], m))[0]
                        model_acc[m].append(rows_key(res.rows) == r["gold_rows"])
                    except (SqlFailed, PorticoError):
                        model_acc[m].append(False)
                print(f"  {m}: {sum(model_acc[m])}/{len(model_acc[m])}, {time.time() - T0:.0f} s", file=sys.stderr,
                      flush=True)  # fmt: skip
    mean = statistics.fmean
    return {"n": len(template), "recall": {k: mean(v) for k, v in recall.items()},
            "hit": {k: mean(v) for k, v in hit.items()}, "template": mean(template), "gold_valid": mean(gold_valid),
            "model": {m: (mean(v), len(v)) for m, v in model_acc.items() if v}}  # fmt: skip


def safety() -> dict[str, Any]:
    policies = {d: Policy.build(d, list(CORPUS_COLUMNS), 200, CORPUS_COLUMNS, s) for d, s in
                CORPUS_DEFAULT_SCHEMA.items()}  # fmt: skip
    attacks = [json.loads(x) for x in (CORPUS / "attacks.jsonl").read_text().splitlines() if x.strip()]
    legit = [json.loads(x) for x in (CORPUS / "legit.jsonl").read_text().splitlines() if x.strip()]

    def verdict(row: dict[str, Any]) -> str | None:
        try:
            validate(row["sql"], policies[row["dialect"]])
            return None
        except Rejection as r:
            return r.rule

    blocked = [(a, verdict(a)) for a in attacks]
    allowed = [verdict(x) is None for x in legit]
    times, cpu = [], []
    for _ in range(5):
        for row in attacks + legit:
            t0, c0 = time.perf_counter(), time.thread_time()
            verdict(row)
            cpu.append((time.thread_time() - c0) * 1000)
            times.append((time.perf_counter() - t0) * 1000)
    by_dialect = {d: (sum(1 for a, v in blocked if a["dialect"] == d and v), sum(1 for a, _ in blocked
                  if a["dialect"] == d)) for d in CORPUS_DEFAULT_SCHEMA}  # fmt: skip
    rules = Counter(v for _, v in blocked if v)
    return {"attacks": len(attacks), "blocked": sum(1 for _, v in blocked if v), "legit": len(legit),
            "allowed": sum(allowed), "by_dialect": by_dialect, "rules": rules, "times": times, "cpu": cpu,
            "missed": [a for a, v in blocked if not v], "langchain": langchain(attacks, legit)}  # fmt: skip


def langchain(attacks: list[dict[str, Any]], legit: list[dict[str, Any]]) -> dict[str, Any] | None:
    """How many statements LangChain's SQLDatabase.run hands to the database driver. Nothing is executed: a
    before_cursor_execute hook records the statement and stops it (SQLDatabase does not parse SQL, so the count does
    not depend on the database; running these attacks on a shared server would be reckless)."""
    try:
        from langchain_community.utilities import SQLDatabase
    except ImportError:
        return None
    from sqlalchemy import create_engine, event

    class Stopped(Exception):
        pass

    engine = create_engine(f"sqlite:///{tempfile.mkdtemp()}/lc.db")
    db = SQLDatabase(engine)
    sent: list[str] = []

    @event.listens_for(engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)
        raise Stopped

    def count(rows: list[dict[str, Any]]) -> int:
        n = 0
        for row in rows:
            before = len(sent)
            with contextlib.suppress(Exception):  # Stopped, wrapped by SQLAlchemy
                db.run(row["sql"])
            n += len(sent) > before
        return n

    return {"attacks_sent": count(attacks), "legit_sent": count(legit)}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


async def main() -> None:
    t_start = time.time()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(config(Path(tmp)))
        await rt.start()
        embed = cached(rt.embedder.embed)
        for ds in DBS:  # the sources embed through the same cache
            sql_of(rt).get(ds).embed = embed
        models = ["local"] + (["remote"] if os.environ.get("PORTICO_SQL_BENCH_URL") else [])
        results = {}
        for ds in DBS:
            for split in SPLITS:
                print(f"{ds} {split} …", file=sys.stderr, flush=True)
                results[(ds, split)] = await evaluate(rt, ds, split, embed, models)
        await rt.close()
    s = safety()
    report(results, s, models, time.time() - t_start, load_before)


def report(results: dict, s: dict, models: list[str], seconds: float, load_before: float) -> None:
    lines = ["# Questions over SQL (`make bench-sql`)", "",
             f"Kummerfeld's GeoQuery and Restaurants (SQLite), both splits; {os.cpu_count()} CPUs, load average "
             f"{load_before:.2f} before and {os.getloadavg()[0]:.2f} after, {seconds:.0f} s.", "",
             "## Retrieval and execution accuracy (test parts)", "",
             "| dataset | split | questions | table recall@1 | @2 | @3 | example hit@1 | @3 | @5 | exec acc: nearest "
             "example + literals | gold SQL passes the validator | " + " | ".join(f"exec acc: {m} (n)" for m in models)
             + " |", "|" + "---|" * (11 + len(models))]  # fmt: skip
    for (ds, split), r in results.items():
        model_cells = [f"{pct(r['model'][m][0])} ({r['model'][m][1]})" if m in r["model"] else "-" for m in models]
        lines.append(f"| {ds} | {split} | {r['n']} | " + " | ".join(pct(r["recall"][k]) for k in KS) + " | "
                     + " | ".join(pct(r["hit"][k]) for k in (1, 3, 5)) + f" | {pct(r['template'])} | "
                     f"{pct(r['gold_valid'])} | " + " | ".join(model_cells) + " |")  # fmt: skip
    n_all = sum(r["n"] for r in results.values())

    def micro(f: Any) -> float:
        return sum(f(r) * r["n"] for r in results.values()) / n_all

    q_only = [r for (_, sp), r in results.items() if sp == "question_split"]
    table_recall = micro(lambda r: r["recall"][2])
    example_hit = sum(r["hit"][3] * r["n"] for r in q_only) / sum(r["n"] for r in q_only)
    template = micro(lambda r: r["template"])
    local = [r["model"]["local"] for r in results.values() if "local" in r["model"]]
    local_acc = sum(a * n for a, n in local) / max(1, sum(n for _, n in local))
    t, c = sorted(s["times"]), sorted(s["cpu"])
    p50, p99 = t[len(t) // 2], t[int(0.99 * (len(t) - 1))]
    cpu50, cpu99 = c[len(c) // 2], c[int(0.99 * (len(c) - 1))]
    lc = s["langchain"]
    lines += ["", "Headline figures: table recall@2 and nearest-example accuracy are micro-averaged over every test "
              "question of both datasets and splits; example hit@3 over the question split only (on the query split "
              "no test template occurs in training, so a hit is impossible by construction); the local model's "
              "accuracy over the questions it was run on. Both schemas are small (7 and 3 tables): table recall "
              "here checks the search, not a 300-table schema.", "",
              "## Safety: the validator beside LangChain's SQLDatabase.run", "",
              "| | attacks blocked | legitimate SELECTs allowed |", "|---|---|---|",
              f"| Portico validator | {s['blocked']}/{s['attacks']} | {s['allowed']}/{s['legit']} |"]  # fmt: skip
    if lc is not None:
        lines.append(f"| LangChain SQLDatabase.run (statements handed to the driver) | "
                     f"{s['attacks'] - lc['attacks_sent']}"
                     f"/{s['attacks']} | {lc['legit_sent']}/{s['legit']} |")  # fmt: skip
    lines += ["", "Per dialect (blocked/attacks): " + ", ".join(f"{d} {b}/{n}" for d, (b, n) in s["by_dialect"].items())
              + ". Rules that fired: " + ", ".join(f"{k} {v}" for k, v in s["rules"].most_common()) + ".",
              "", f"Validation latency over the corpus (5 passes, {len(t)} calls): CPU time of the validating thread "
              f"p50 {cpu50:.3f} ms, p99 {cpu99:.3f} ms; wall clock p50 {p50:.3f} ms, p99 {p99:.3f} ms. The machine is "
              "shared (see the load average): wall-clock tails include time the scheduler gave to other processes, "
              "so the headline `validate_p99_ms` is the CPU-time p99.", ""]  # fmt: skip
    if lc is not None:
        lines += ["LangChain's `SQLDatabase.run` has no check of its own: every statement goes to the driver except "
                  "where SQLAlchemy's `text()` stops it first (a `:name` bind parameter with no value).",
                  ""]  # fmt: skip
    if s["missed"]:
        lines += ["Attacks the validator let through:", *[f"- {a['dialect']}: `{a['sql']}`" for a in s["missed"]], ""]
    last = (f"sql table_recall={table_recall:.3f} example_hit={example_hit:.3f} exec_acc_local={local_acc:.3f} "
            f"exec_acc_template={template:.3f} attacks_blocked={s['blocked']}/{s['attacks']} "
            f"legit_allowed={s['allowed']}/{s['legit']} validate_p99_ms={cpu99:.3f}")  # fmt: skip
    lines.append(last)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
