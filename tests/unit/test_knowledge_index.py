"""The embedded store's in-memory indexes: incremental BM25 (the same scores as bm25s, without a rebuild per write)
and the vector index whose HNSW graph is updated in place."""

from __future__ import annotations

import random

import bm25s
import numpy as np
import pytest

from portico.context.knowledge.bm25 import Analyzer, BM25Index, Expansion
from portico.context.knowledge.vectors import VectorIndex

WORDS = ["protein", "cell", "gene", "cancer", "mouse", "tumor", "immune", "virus", "dose", "blood", "brain",
         "heart", "risk", "trial", "drug", "insulin", "receptor", "kinase", "signal", "growth", "factor"]  # fmt: skip


def _corpus(n: int, seed: int = 1) -> list[list[str]]:
    rnd = random.Random(seed)
    return [[rnd.choice(WORDS) for _ in range(rnd.randint(3, 40))] for _ in range(n)]


def _bm25s_scores(docs: list[list[str]], query: list[str]) -> np.ndarray:
    m = bm25s.BM25(k1=1.2, b=0.75, method="lucene")
    m.index(docs, show_progress=False)
    terms = [t for t in query if t in m.vocab_dict]
    return np.asarray(m.get_scores(terms), dtype=np.float32) if terms else np.zeros(len(docs), dtype=np.float32)


def test_incremental_bm25_scores_equal_bm25s_after_adds_and_removes() -> None:
    docs = _corpus(300)
    idx = BM25Index(analyzer=Analyzer())
    for key, toks in enumerate(docs):
        idx.add_tokens(key, toks)
        if key == 150:  # a read in the middle of the writes
            idx.scores("protein kinase")
    removed = set(range(0, 300, 7))
    for key in removed:
        idx.remove(key)
    idx.add_tokens(3, ["insulin", "insulin", "receptor"])  # replaces key 3's tokens
    live = {k: t for k, t in enumerate(docs) if k not in removed}
    live[3] = ["insulin", "insulin", "receptor"]
    for query in (["protein", "kinase"], ["insulin", "receptor", "dose"], ["virus", "virus"], ["nosuchterm"]):
        keys, _ = idx.scores(" ".join(query))
        got = idx.term_scores(query)  # the tokens as they are (scores() would stem the query first)
        order = sorted(live)
        want = _bm25s_scores([live[k] for k in order], query)
        by_key = dict(zip(keys.tolist(), got.tolist(), strict=True))
        np.testing.assert_allclose([by_key[k] for k in order], want, rtol=1e-5, atol=1e-6)
        assert all(by_key[k] == 0.0 for k in removed if k != 3)
    assert len(idx) == len(live)
    np.testing.assert_array_equal(idx.scores("kinases signal")[1], idx.term_scores(["kinas", "signal"]))


def test_bm25_compacts_when_most_rows_are_removed() -> None:
    idx = BM25Index()
    for key, toks in enumerate(_corpus(200, seed=2)):
        idx.add_tokens(key, toks)
    for key in range(150):
        idx.remove(key)
    keys, scores = idx.scores("protein")
    assert len(idx) == 50 and len(keys) <= 2 * 50  # dead rows were dropped, at most as many as live ones remain
    assert set(keys.tolist()) >= set(range(150, 200))
    assert not scores[np.isin(keys, np.arange(150))].any()
    assert idx.rows(np.asarray([199])).tolist() == [keys.tolist().index(199)]


def test_hnsw_index_is_updated_in_place_not_rebuilt() -> None:
    rnd = np.random.default_rng(0)
    vecs = rnd.normal(size=(400, 16)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ix = VectorIndex(16, ann_threshold=100)
    ix.add(list(range(300)), vecs[:300])
    keys, _ = ix.search(vecs[5], 3)
    assert keys[0] == 5
    graph = ix._ann
    assert graph is not None
    ix.add(list(range(300, 400)), vecs[300:])  # beyond the graph's capacity: it grows
    ix.remove([5])
    keys, _ = ix.search(vecs[350], 3)
    assert keys[0] == 350 and ix._ann is graph  # the same graph, updated
    assert 5 not in ix.search(vecs[5], 10)[0].tolist()
    ix.remove(list(range(0, 300)))  # mostly tombstones now: the graph is dropped and rebuilt from live vectors
    keys, _ = ix.search(vecs[360], 5)
    assert keys[0] == 360 and ix._ann is not graph and len(ix) == 100
    assert set(keys.tolist()) <= set(range(300, 400))


@pytest.mark.parametrize("n", [0, 1])
def test_empty_and_tiny_indexes(n: int) -> None:
    idx = BM25Index()
    for key in range(n):
        idx.add_tokens(key, ["cell"])
    _, scores = idx.scores("cell")
    assert len(scores) == n and (n == 0 or scores[0] > 0)


@pytest.mark.parametrize("threshold", [10**6, 0])  # exact, and HNSW
def test_a_chunk_with_several_vectors_scores_by_its_best(threshold: int) -> None:
    rnd = np.random.default_rng(1)
    vecs = rnd.normal(size=(60, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ix = VectorIndex(8, ann_threshold=threshold)
    ix.add([1, 2, 3], [vecs[0:20], vecs[20], vecs[21:60]])  # 20 windows, 1 vector, 39 windows
    for probe, owner in ((vecs[7], 1), (vecs[20], 2), (vecs[50], 3)):
        keys, sims = ix.search(probe, 3)
        assert keys.tolist()[0] == owner and len(set(keys.tolist())) == 3 and sims[0] == pytest.approx(1.0)
        exact = ix.key_scores(probe, np.asarray([1, 2, 3]))
        want = [float((vecs[0:20] @ probe).max()), float(vecs[20] @ probe), float((vecs[21:60] @ probe).max())]
        np.testing.assert_allclose(exact, want, rtol=1e-5)
        np.testing.assert_allclose(ix.scores(probe)[1], want, rtol=1e-5)
    ix.remove([1])
    ix.add([4], [vecs[0:3]])
    keys, _ = ix.search(vecs[1], 3)
    assert keys.tolist()[0] == 4 and 1 not in keys.tolist() and len(ix) == 3


def test_expansion_from_chunks_the_caller_chose() -> None:
    idx = BM25Index()
    for key, text in enumerate(["felines purr when content", "kittens purr loudly", "dogs bark at strangers"]):
        idx.add(key, text)
    rows = idx.rows(np.array([0, 1, 2]))
    _, plain = idx.scores("feline", Expansion(()))  # no chunks: the plain query
    np.testing.assert_array_equal(plain, idx.term_scores(["felin"]))
    _, purr = idx.scores("feline", Expansion(((0, 0.0),), terms=5, weight=0.5))
    assert plain[rows[1]] == 0 and purr[rows[1]] > 0 and purr[rows[2]] == 0  # "purr" came from chunk 0
    _, bark = idx.scores("feline", Expansion(((2, 0.0),), terms=5, weight=0.5))  # another expansion, not the cache
    assert bark[rows[2]] > 0 and bark[rows[1]] == 0
