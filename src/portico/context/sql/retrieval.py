"""What goes into the prompt: the few tables a question needs (hybrid search over table and column names,
descriptions and sample values, plus the foreign-key join paths between them) and similar question→SQL examples.

Both searches reuse the knowledge base's retrieval parts: its BM25 index (Snowball-stemmed, stop words removed),
cosine scores over the runtime's embedder, and its weighted score fusion. Schemas and example sets are small (tens to
thousands of entries), so the indexes live in memory and scoring is exact.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from portico.context.knowledge.bm25 import BM25Index
from portico.context.knowledge.fusion import ranked, weighted
from portico.context.sql.schema import SchemaInfo, TableInfo

Embed = Callable[[list[str]], Awaitable[np.ndarray]]
BM25_WEIGHT = 0.45  # the knowledge base's default share of BM25 in weighted fusion
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def words(name: str) -> str:
    """``CITY_NAME`` / ``cityName`` → ``city name``, so identifiers match the question's words."""
    return _CAMEL.sub(" ", name).replace("_", " ").replace(".", " ").lower()


class HybridIndex:
    """BM25 + embedding similarity over a fixed list of texts, fused by min-max weighted scores."""

    def __init__(self, texts: list[str], embed: Embed | None) -> None:
        self.texts = texts
        self.embed = embed
        self.bm25 = BM25Index()
        for i, t in enumerate(texts):
            self.bm25.add(i, t)
        self.matrix: np.ndarray | None = None

    async def prepare(self) -> None:
        if self.embed is not None and self.matrix is None and self.texts:
            self.matrix = await self.embed(self.texts)

    async def search(self, query: str, k: int, vector: np.ndarray | None = None) -> list[tuple[int, float]]:
        if not self.texts:
            return []
        keys, bm = self.bm25.scores(query)
        lists = [(keys, bm)]
        weights = [1.0]
        if self.embed is not None:
            await self.prepare()
            assert self.matrix is not None
            if vector is None:
                vector = (await self.embed([query]))[0]
            lists.append((np.arange(len(self.texts), dtype=np.int64), self.matrix @ vector.astype(np.float32)))
            weights = [BM25_WEIGHT, 1 - BM25_WEIGHT]
        top_keys, top_scores = ranked(weighted(lists, weights, "minmax"), k)
        return list(zip(top_keys.tolist(), top_scores.tolist(), strict=True))


def table_document(t: TableInfo) -> str:
    parts = [words(t.name), t.description]
    for c in t.columns:
        parts.append(words(c.name))
        if c.description:
            parts.append(c.description)
        parts.extend(str(v) for v in c.samples)
    return " ".join(p for p in parts if p)


@dataclass(slots=True)
class JoinEdge:
    left: str
    left_columns: list[str]
    right: str
    right_columns: list[str]

    def condition(self) -> str:
        return " AND ".join(f"{self.left}.{a} = {self.right}.{b}"
                            for a, b in zip(self.left_columns, self.right_columns, strict=True))  # fmt: skip


class TableSelector:
    def __init__(self, schema: SchemaInfo, embed: Embed | None) -> None:
        self.schema = schema
        self.names = list(schema.tables)
        self.index = HybridIndex([table_document(schema.tables[n]) for n in self.names], embed)
        self.graph: dict[str, list[JoinEdge]] = {n: [] for n in self.names}
        for t in schema.tables.values():
            for fk in t.foreign_keys:
                edge = JoinEdge(t.name, fk.columns, fk.table, fk.referred)
                self.graph[t.name].append(edge)
                self.graph[fk.table].append(JoinEdge(fk.table, fk.referred, t.name, fk.columns))

    async def select(self, question: str, k: int, vector: np.ndarray | None = None) -> tuple[list[str], list[JoinEdge]]:
        """The ``k`` best tables (all of them when the schema has no more), then the tables on the shortest
        foreign-key paths between them, and the join edges of those paths."""
        if len(self.names) <= k:
            chosen = list(self.names)
        else:
            chosen = [self.names[i] for i, _ in await self.index.search(question, k, vector)]
        return self.join_paths(chosen)

    def join_paths(self, chosen: list[str]) -> tuple[list[str], list[JoinEdge]]:
        tables = list(chosen)
        edges: list[JoinEdge] = []
        seen_edges: set[tuple[str, str, tuple[str, ...]]] = set()
        for i, a in enumerate(chosen):
            for b in chosen[i + 1 :]:
                for e in self._path(a, b):
                    key = (*sorted((e.left, e.right)), tuple(sorted(e.left_columns + e.right_columns)))
                    if key in seen_edges:
                        continue
                    seen_edges.add(key)  # type: ignore[arg-type]
                    edges.append(e)
                    for n in (e.left, e.right):
                        if n not in tables:
                            tables.append(n)
        return tables, edges

    def _path(self, a: str, b: str) -> list[JoinEdge]:
        prev: dict[str, JoinEdge | None] = {a: None}
        queue = deque([a])
        while queue:
            n = queue.popleft()
            if n == b:
                break
            for e in self.graph.get(n, []):
                if e.right not in prev:
                    prev[e.right] = e
                    queue.append(e.right)
        if b not in prev:
            return []
        path: list[JoinEdge] = []
        n = b
        while (e := prev[n]) is not None:
            path.append(e)
            n = e.left
        return path[::-1]


@dataclass(slots=True)
class Example:
    question: str
    sql: str


class ExampleStore:
    """A source's question→SQL examples (``portico sql train``), kept as JSON lines under state_dir."""

    def __init__(self, path: Path, embed: Embed | None) -> None:
        self.path = path
        self.embed = embed
        self.examples: list[Example] = []
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    row = json.loads(line)
                    self.examples.append(Example(row["question"], row["sql"]))
        self._index: HybridIndex | None = None

    def add(self, examples: list[Example]) -> None:
        """Append (an example with the same question replaces the older one) and save."""
        by_q = {e.question: e for e in self.examples}
        for e in examples:
            by_q[e.question] = e
        self.examples = list(by_q.values())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"question": e.question, "sql": e.sql}) + "\n" for e in self.examples))
        tmp.replace(self.path)
        self._index = None

    async def search(self, question: str, k: int, vector: np.ndarray | None = None) -> list[Example]:
        if k <= 0 or not self.examples:
            return []
        if self._index is None:
            self._index = HybridIndex([e.question for e in self.examples], self.embed)
        return [self.examples[i] for i, _ in await self._index.search(question, k, vector)]
