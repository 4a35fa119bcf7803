"""The embedded store's persistence: one SQLite file per knowledge base with its documents, chunks and vectors.

SQLite is the source of truth; the BM25 and vector indexes are rebuilt from it when a knowledge base is opened.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kb_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY, source TEXT NOT NULL, title TEXT NOT NULL, hash TEXT NOT NULL, metadata TEXT NOT NULL,
    chunks INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    key INTEGER PRIMARY KEY AUTOINCREMENT, document_id TEXT NOT NULL, position INTEGER NOT NULL,
    section TEXT NOT NULL, text TEXT NOT NULL, tokens INTEGER NOT NULL, metadata TEXT NOT NULL,
    terms TEXT NOT NULL, vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_document ON chunks (document_id);
"""


@dataclass(slots=True)
class ChunkRow:
    document_id: str
    position: int
    section: str
    text: str
    tokens: int
    metadata: dict[str, Any]
    terms: list[str]  # BM25 tokens, kept so reopening needs no re-analysis
    vector: np.ndarray  # (dim,), or (windows, dim) for a chunk longer than the embedding model reads
    index_text: str = ""  # what the retrievers saw (title and section + text); stores with their own analyzers


@dataclass(slots=True)
class DocumentRow:
    id: str
    source: str
    title: str
    hash: str
    metadata: dict[str, Any]
    chunks: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "title": self.title, "hash": self.hash,
                "metadata": self.metadata, "chunks": self.chunks, "created_at": int(self.created_at),
                "updated_at": int(self.updated_at)}  # fmt: skip


class SQLiteStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        # Searches read through their own connection: with WAL they never wait for, or see half of, a write.
        self.reader = sqlite3.connect(path, check_same_thread=False, isolation_level=None)

    def close(self) -> None:
        self.reader.close()
        self.conn.close()

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM kb_meta")}

    def set_meta(self, values: dict[str, Any]) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT OR REPLACE INTO kb_meta (key, value) VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in values.items()])  # fmt: skip

    def document(self, doc_id: str) -> DocumentRow | None:
        row = self.conn.execute(
            "SELECT id, source, title, hash, metadata, chunks, created_at, updated_at FROM documents WHERE id = ?",
            (doc_id,),
        ).fetchone()
        return _doc(row) if row else None

    def documents(self, limit: int = 100, after: str = "") -> list[DocumentRow]:
        rows = self.reader.execute(
            "SELECT id, source, title, hash, metadata, chunks, created_at, updated_at FROM documents "
            "WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [_doc(r) for r in rows]

    def hashes(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT id, hash FROM documents"))

    def counts(self) -> tuple[int, int]:
        docs = self.reader.execute("SELECT count(*) FROM documents").fetchone()[0]
        chunks = self.reader.execute("SELECT count(*) FROM chunks").fetchone()[0]
        return int(docs), int(chunks)

    def replace(self, doc: DocumentRow, chunks: list[ChunkRow]) -> tuple[list[int], list[int]]:
        """Write a document and its chunks in one transaction, replacing any earlier version.
        Returns (removed chunk keys, new chunk keys)."""
        now = time.time()
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            old = [r[0] for r in self.conn.execute("SELECT key FROM chunks WHERE document_id = ?", (doc.id,))]
            created = self.conn.execute("SELECT created_at FROM documents WHERE id = ?", (doc.id,)).fetchone()
            self.conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc.id,))
            doc.created_at = created[0] if created else now
            doc.updated_at = now
            doc.chunks = len(chunks)
            self.conn.execute(
                "INSERT OR REPLACE INTO documents (id, source, title, hash, metadata, chunks, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (doc.id, doc.source, doc.title, doc.hash, json.dumps(doc.metadata), doc.chunks, doc.created_at,
                 doc.updated_at),
            )  # fmt: skip
            new = []
            for c in chunks:
                cur = self.conn.execute(
                    "INSERT INTO chunks (document_id, position, section, text, tokens, metadata, terms, vector)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (c.document_id, c.position, c.section, c.text, c.tokens, json.dumps(c.metadata),
                     " ".join(c.terms), c.vector.astype(np.float32).tobytes()),
                )  # fmt: skip
                new.append(int(cur.lastrowid or 0))
        return old, new

    def delete(self, doc_id: str) -> list[int] | None:
        """Remove a document; its chunk keys, or None when there was no such document."""
        with self.conn:
            self.conn.execute("BEGIN IMMEDIATE")
            if self.conn.execute("SELECT 1 FROM documents WHERE id = ?", (doc_id,)).fetchone() is None:
                return None
            old = [r[0] for r in self.conn.execute("SELECT key FROM chunks WHERE document_id = ?", (doc_id,))]
            self.conn.execute("DELETE FROM chunks WHERE document_id = ?", (doc_id,))
            self.conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,))
        return old

    def scan(self) -> Iterator[tuple[int, str, dict[str, Any], list[str], bytes]]:
        """(key, document id, metadata, BM25 terms, vector bytes) of every chunk, for rebuilding the indexes."""
        for key, doc_id, meta, terms, vec in self.conn.execute(
            "SELECT key, document_id, metadata, terms, vector FROM chunks ORDER BY key"
        ):
            yield key, doc_id, json.loads(meta), terms.split(" ") if terms else [], vec

    def chunks(self, keys: list[int]) -> dict[int, dict[str, Any]]:
        if not keys:
            return {}
        marks = ",".join("?" * len(keys))
        rows = self.reader.execute(
            f"SELECT c.key, c.document_id, c.position, c.section, c.text, c.metadata, d.source, d.title "
            f"FROM chunks c JOIN documents d ON d.id = c.document_id WHERE c.key IN ({marks})",
            keys,
        )
        out = {}
        for key, doc_id, pos, section, text, meta, source, title in rows:
            out[key] = {"id": f"{doc_id}#{pos}", "document_id": doc_id, "position": pos, "section": section,
                        "text": text, "source": source, "title": title, "metadata": json.loads(meta)}  # fmt: skip
        return out


def _doc(row: tuple) -> DocumentRow:
    i, source, title, h, meta, chunks, created, updated = row
    return DocumentRow(i, source, title, h, json.loads(meta), chunks, created, updated)
