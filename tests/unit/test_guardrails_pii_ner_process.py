"""The spaCy NER in a worker process: the same entities as in-process, a restart when the worker dies, a clear
error when it cannot start, and nothing left running after close()."""

from __future__ import annotations

import pytest

from portico.guardrails.pii.detector import PIIDetector
from portico.guardrails.pii.ner import SPACY_MODEL, NerProcess, load_spacy

TEXT = "Angela Merkel met Emmanuel Macron in Paris on Tuesday.\nJulcsa Kárpáthy\nMhealthcoach\n28030 Edeby 55"


@pytest.fixture(scope="module")
def worker():  # type: ignore[no-untyped-def]
    w = NerProcess(SPACY_MODEL)
    yield w
    w.close()


def test_same_entities_as_in_process(worker: NerProcess) -> None:
    mine = [(e.start_char, e.end_char, e.label_, e.text) for e in load_spacy()(TEXT).ents]
    theirs = [(e.start_char, e.end_char, e.label_, e.text) for e in worker(TEXT).ents]
    assert theirs == mine and mine


def test_detector_spans_are_the_same_either_way(worker: NerProcess) -> None:
    in_process = PIIDetector()
    with_worker = PIIDetector(ner_process=True)
    try:
        assert with_worker.detect(TEXT) == in_process.detect(TEXT)
    finally:
        with_worker.close()
    assert with_worker._worker is not None and with_worker._worker._proc is None  # closed


def test_a_dead_worker_is_restarted(worker: NerProcess) -> None:
    worker._proc.kill()
    worker._proc.wait()
    assert [e.text for e in worker("Angela Merkel met Emmanuel Macron.").ents] == ["Angela Merkel", "Emmanuel Macron"]


def test_close_stops_the_process() -> None:
    w = NerProcess(SPACY_MODEL)
    proc = w._proc
    w.close()
    assert proc.poll() is not None


def test_a_model_that_does_not_load_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"NER worker did not start.*no_such_spacy_model.*E050"):
        NerProcess("no_such_spacy_model", start_timeout=60)


def test_concurrent_callers_each_get_their_own_entities(worker: NerProcess) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"{name} met Emmanuel Macron in {city}." for name, city in
             [("Angela Merkel", "Paris"), ("Olaf Scholz", "Berlin"), ("Pedro Sánchez", "Madrid")] * 4]  # fmt: skip
    nlp = load_spacy()
    want = [[(e.start_char, e.end_char, e.label_) for e in nlp(t).ents] for t in texts]
    with ThreadPoolExecutor(6) as pool:
        got = list(pool.map(lambda t: [(e.start_char, e.end_char, e.label_) for e in worker(t).ents], texts))
    assert got == want
