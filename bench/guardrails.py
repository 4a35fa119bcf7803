"""bench-guardrails: PII (typed span P/R/F1, ours vs Presidio defaults), injection/jailbreak (P/R/F1/FPR, ours vs a
plain logistic regression on MiniLM embeddings), toxicity (F1 held-out and Jigsaw), latency of the default input
set (pii + injection) on 100/1k/4k-token prompts and of the regex tier alone. Everything runs in this one process.

Data: $PORTICO_DATA (default ../shared/data). Embeddings are cached under $PORTICO_GUARDRAILS_CACHE
(default /work/cache/guardrails). Writes bench/results/guardrails.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fcntl
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from portico.config.schema import LocalDeployment
from portico.gateway.providers.local.embeddings import SentenceEmbeddingBackend
from portico.guardrails import toxicity as tox
from portico.guardrails.injection import train as inj
from portico.guardrails.injection.model import FAST_WEIGHTS, SELECTION, InjectionModel, design, ngram_vectorizer
from portico.guardrails.injection.step import injection_step
from portico.guardrails.pii.detector import PIIDetector, load_presidio
from portico.guardrails.pii.ner import TUNED_NER
from portico.guardrails.pii.recognizers import regex_hits
from portico.guardrails.pii.step import pii_step
from portico.guardrails.topics import topics_step
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "guardrails.md"
PII_TEST = inj.DATA / "pii" / "presidio_research" / "synth_dataset_v2.json"
# Gold type → the type both systems must output for a match. Types no system outputs stay as they are (misses).
GOLD_MAP = {"STREET_ADDRESS": "ADDRESS", "GPE": "LOCATION", "DOMAIN_NAME": "URL"}
TOPICS = {
    "denied": [
        {"name": "politics", "description": "elections, political parties and politicians", "keywords": ["election"]},
        {"name": "medical", "description": "medical diagnosis and treatment"},
    ]
}
PRED_MAP = {"DOMAIN_NAME": "URL"}
TRIED_PII = (
    "Tried for the 0.70 goal, on the dev third only (typed F1 there 0.570 → 0.639): ages after 'turned'/'"
    "when he was' (AGE recall 0.49 → 1.00), ZIP codes after a label, company names with a legal form, pla"
    "ces after cues ('grew up in', 'I am in'), spaCy dates kept only with a digit or month name ('last ni"
    "ght' is no PII; DATE_TIME false positives 79 → 17), intersections and a second unit line in addresse"
    "s; splitting multi-line addresses into street / place / postcode parts lowered it (0.614 → 0.588) an"
    "d was dropped. Then the lexicons (`guardrails/pii/lexicon.py`: Faker's first and last names of 86 loc"
    "ales, country and city names), each rule kept by its dev-third typed F1 (0.641 before): an ORG or a "
    "multi-word place made only of known names is a PERSON (0.657); a known first name and a capitalised word "
    "(+0.007); country (+0.003) and city names (+0.004); place cues ('based in', 'moved here from'; +0.004); "
    "lists of three or more words, two thirds of them first names and fewer than half of them places, under "
    "the NER's own place labels (+0.011); two known surnames joined by a "
    "hyphen as a company (+0.004); a driver's licence number after its label; an ORG with a known name and no "
    "sign of a company labelled PERSON (+0.006); a card number after its label without a valid checksum and a "
    "job after 'worked for X as' (together +0.007); an NER name or place cut at the end of its line "
    "('Allan\\nEchocardiographer'; +0.003) and a PERSON ending in a legal form made an ORG (+0.001); dev typed "
    "F1 0.711. Dropped: a lone known first name as a PERSON (+0.002, within noise), three surnames in "
    "'A, B and C' as a company (-0.001). An ORG only with a legal form or an employer cue ('I work for') "
    "raised dev typed F1 by 0.012 but lowered masking (any-type) recall there from 0.717 to 0.679: "
    "the small model calls some people's names ORG, and those would go unmasked. It is an option "
    "(`organizations: evidence`, the row above), not the default: a privacy guardrail does not trade "
    "masking for labels. Then addresses (`guardrails/pii/addresses.py`; dev typed F1 0.711 → 0.845, ADDRESS "
    "recall there 0.35 → 0.89): the generator fills an address field by field in some layouts (a letter's "
    "address block under a name, a quoted block, a bare block, 'N street' ending a sentence: building number, "
    "street, unit, postcode as four addresses, city and country as places) and as one value elsewhere (after "
    "'my address is', under a company's name) — visible in `generated_large.json`'s templates, and in "
    "the dev third; the detector now reports those layouts as parts (masking is the same: every part is "
    "masked). With it, regex fixes found on the dev third: Greek, Cyrillic and 'Þ' capitals, lower-case street "
    "types ('Luite tee 87', 'ul. Narewska 94'), a building number before a numbered street ('7943 2027 Prospect "
    "St'), the place after a unit on its line ('Apt. 085 BODØ nan'), 'United Kingdom' no longer read as 'Unit' + "
    "'ed', lower-case military addresses. Against false alarms, 'N Name N' with no street word whose words are all "
    "common English words (MiniLM's WordPiece vocabulary) is no address ('Chapter 3 Verse 16', 'Python 3 Version "
    "11'): on 4,000 non-PII prompts (deepset, malignant, jackhhao) address hits went 4 → 1, every other type "
    "unchanged. Then, in a letterhead or signature, the nearest line above the address that is no person's name "
    "as the company ('Julcsa Kárpáthy\\nMhealthcoach\\n50668 Kiannonkatu 98 ...'), and P.O. boxes as addresses "
    "(dev 0.845 → 0.858, ORGANIZATION recall there 0.47 → 0.64; on the 4,000 non-PII prompts no entity count "
    "changed). Then employers: the capitalised words after 'work for', 'a year at', 'employed by' as an "
    "ORGANIZATION, and an NER PERSON after such a cue with no known name in it as one too ('I work for "
    "Flightstats'; dev 0.858 → 0.868, ORGANIZATION recall there 0.64 → 0.74; on the non-PII prompts one PERSON "
    "became an ORGANIZATION, both masked). What is left: the small model's ORG and LOCATION labels elsewhere in "
    "prose, ZIP codes without a label."
)
TRIED_LATENCY = (
    "Tried for the 100 ms goal (p99 at 1k tokens): spaCy's NER alone, without the shared `tok2vec` pipe that "
    "only the tagger and parser use (67 → 43 ms CPU, same entities); the NER's matrix products on numpy's "
    "OpenBLAS with one thread instead of BLIS (detect 60 → 47 ms CPU, same spans on all 1,500 texts); NER "
    "sentence by sentence through `nlp.pipe` (no gain: 77 vs 67 ms CPU, dropped); the `fast` injection model "
    "(7 ms) instead of `full` (MiniLM on every chunk); the shared query embedding on ONNX Runtime, float32, "
    "exported from the packaged weights (the same vectors: max difference 2e-7; 92 → 75 ms CPU at 256 tokens in "
    "a side-by-side run; now the default). Measured and not used: ONNX Runtime's BERT graph fusions (no further "
    "gain), int8 (ONNX dynamic int8: 40 ms, mean cosine 0.993 to float32; torch dynamic int8: 27 ms, cosine "
    "0.94) and bfloat16 (58 ms, cosine ≥ 0.998): the embedder is shared with the semantic cache, whose verifier "
    "was trained on float32 vectors. Then the NER in a worker process (`ner_process: true`, now the default; "
    "`guardrails/pii/ner.py`): spaCy's tokenizer and NER hold the GIL for nearly all of their time, so in the "
    "server's process the `pii` step ran one at a time with the injection model and the topics step's tokenizer "
    "(two PII scans of the 1k-token prompt in two threads took 120 ms per pair, one after the other 91): in a "
    "child process it runs beside them, and the parent runs the regex tier meanwhile (the in-process figure is "
    "the last one above). The floor is then the slowest step plus what other work on the machine takes."
)
LOCK = os.environ.get("PORTICO_BENCH_LOCK", "/tmp/portico-bench.lock")  # Presidio's names → the same canonical types


# ---------------------------------------------------------------------------------------------------- PII


def spans_gold(doc: dict[str, Any]) -> list[tuple[int, int, str]]:
    return [(s["start_position"], s["end_position"], GOLD_MAP.get(s["entity_type"], s["entity_type"]))
            for s in doc["spans"]]  # fmt: skip


def match_counts(gold: list, pred: list, typed: bool) -> dict[str, list[int]]:
    """Per type [tp, fp, fn]; a prediction matches one unmatched gold span of the same type with IoU ≥ 0.5."""
    out: dict[str, list[int]] = {}
    used: set[int] = set()
    for p in pred:
        hit = None
        for i, g in enumerate(gold):
            if i not in used and (not typed or g[2] == p[2]) and _iou(g, p) >= 0.5:
                hit = i
                break
        key = p[2] if typed else "ANY"
        if hit is None:
            out.setdefault(key, [0, 0, 0])[1] += 1
        else:
            used.add(hit)
            out.setdefault(gold[hit][2] if typed else "ANY", [0, 0, 0])[0] += 1
    for i, g in enumerate(gold):
        if i not in used:
            out.setdefault(g[2] if typed else "ANY", [0, 0, 0])[2] += 1
    return out


def _iou(a: tuple, b: tuple) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union else 0.0


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def pii_eval(docs: list[dict], predict: Any) -> tuple[dict[str, list[int]], list[int], list[int]]:
    per: dict[str, list[int]] = {}
    anyc = [0, 0, 0]
    for d in docs:
        gold, pred = spans_gold(d), predict(d["full_text"])
        for k, v in match_counts(gold, pred, True).items():
            acc = per.setdefault(k, [0, 0, 0])
            for i in range(3):
                acc[i] += v[i]
        for v in match_counts(gold, pred, False).values():
            for i in range(3):
                anyc[i] += v[i]
    total = [sum(v[i] for v in per.values()) for i in range(3)]
    return per, total, anyc


def is_dev(doc: dict[str, Any]) -> bool:
    """The dev part of synth_dataset_v2 (a third of its templates, whole templates so no sentence pattern is in
    both parts): PII rules were tuned on it; every number below is on the other two thirds."""
    return doc["template_id"] % 3 == 0


def bench_pii(lines: list[str]) -> tuple[float, float]:
    docs = [d for d in json.loads(PII_TEST.read_text()) if not is_dev(d)]
    ours = PIIDetector(ner="spacy")
    tuned = PIIDetector(ner="spacy", ner_weights=TUNED_NER)
    org_evidence = PIIDetector(ner="spacy", organizations="evidence")
    no_lexicon = PIIDetector(ner="spacy", lexicon=False)
    presidio = load_presidio()
    manifest = json.loads((TUNED_NER.parent / "pii_ner_data.json").read_text())
    systems = {
        "Portico (regex/checksum + spaCy NER)": lambda t: [(s.start, s.end, s.type) for s in ours.detect(t)],
        "Portico, tuned NER (`ner_weights: tuned`)": lambda t: [(s.start, s.end, s.type) for s in tuned.detect(t)],
        "Portico, ORG only with evidence (`organizations: evidence`)": lambda t: [
            (s.start, s.end, s.type) for s in org_evidence.detect(t)
        ],
        "Portico without the lexicons (`lexicon: false`)": lambda t: [
            (s.start, s.end, s.type) for s in no_lexicon.detect(t)
        ],
        "Portico regex tier alone": lambda t: [(s, e, ty) for s, e, ty, _ in regex_hits(t)],
        "Presidio defaults (same spaCy model)": lambda t: [
            (r.start, r.end, PRED_MAP.get(r.entity_type, r.entity_type)) for r in presidio.analyze(t, language="en")
        ],
    }
    results = {name: pii_eval(docs, fn) for name, fn in systems.items()}
    lines += [f"## PII: presidio-research synth_dataset_v2, test part ({len(docs):,} texts), span-level", "",
              "The file's templates are split by `template_id % 3`: a third (dev) was used to tune the rules, the "
              "other two thirds (test) give every number below. A predicted span counts when its type equals the "
              "gold type (after the mapping below) and its character IoU with an unmatched gold span is ≥ 0.5. "
              "Micro-averaged. 'any type' ignores types: what masking needs (a name masked as an ORGANIZATION is "
              "still masked).",
              "", "| system | typed P | typed R | typed F1 | any-type P | any-type R | any-type F1 |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, (_, total, anyc) in results.items():
        p, r, f = prf(*total)
        lines.append(f"| {name} | {p:.3f} | {r:.3f} | {f:.3f} | " + " | ".join(f"{x:.3f}" for x in prf(*anyc)) + " |")
    names = list(systems)
    per = [results[names[0]][0], results[names[1]][0], results["Presidio defaults (same spaCy model)"][0]]
    gold_types = sorted({GOLD_MAP.get(s["entity_type"], s["entity_type"]) for d in docs for s in d["spans"]})
    lines += ["", "Per gold type, P / R / F1:", "",
              "| type | gold spans | ours | ours, tuned NER | Presidio |", "|---|---|---|---|---|"]  # fmt: skip
    for t in gold_types:
        cells = [per[0].get(t, [0, 0, 0])[0] + per[0].get(t, [0, 0, 0])[2]]
        cells += ["{:.2f} / {:.2f} / {:.2f}".format(*prf(*p.get(t, [0, 0, 0]))) for p in per]
        lines.append("| {} | {} | {} | {} | {} |".format(t, *cells))
    held = manifest["holdout_f1"]
    lines += ["", f"Tuned NER (option `ner_weights: tuned`; `{TUNED_NER.parent.name}/`, trained by `python -m "
              "portico.guardrails.pii.train`): the packaged model's `ner` fine-tuned, same architecture, with a new "
              "ADDRESS label, on presidio-research sentences none of whose templates is a test template: "
              f"{sum(map(len, manifest['train'].values()))} sentences ({manifest['train_templates']} templates) "
              "from the dev third of this file and from `generated_large.json` (same generator), plus the packaged "
              f"model's own entities on {manifest['rehearsal_texts']:,} Civil Comments texts (rehearsal, against "
              "forgetting). Excluded: " + "; ".join(f"{k} {v}" for k, v in manifest["excluded_counts"].items())
              + " (a template is the masked text with placeholders as one token; 'within' is difflib ratio ≥ 0.9). "
              f"Early stopping on {sum(map(len, manifest['holdout'].values()))} held-out sentences "
              f"({manifest['holdout_templates']} other templates): typed F1 there {held['packaged']:.3f} (packaged) "
              f"→ {held['tuned']:.3f} (tuned). Not the default: the gain does not carry over to the test templates "
              "in the same measure, and its entities agree with the packaged model's on unseen Civil Comments texts "
              f"at F1 {manifest['agreement_with_packaged_on_civil_comments']:.3f} only (it finds fewer lower-case "
              "names there)."]  # fmt: skip
    lines += ["", "Type mapping: gold STREET_ADDRESS → ADDRESS, GPE → LOCATION, DOMAIN_NAME → URL (Presidio's "
              "DOMAIN_NAME → URL too); every other type keeps its name, and predicted types absent from the gold "
              "set (e.g. API_KEY, US_BANK_NUMBER) count as false positives. The first address rules were written "
              "against `generated_large.json` (same generator, different file, some of whose templates are test "
              "templates), the address layouts and fixes below against the dev part, with the layouts' convention "
              "read from `generated_large.json`'s templates; the age, ZIP, company, place-cue, "
              "vague-date and lexicon rules against the dev part; the driver's licence rule (a number after a "
              "'driver's license number is' label, as Presidio's own recognizer looks for) against "
              "`generated_large.json`, some of whose templates are test templates.", "", TRIED_PII, ""]  # fmt: skip
    ours_f = prf(*results[next(iter(systems))][1])[2]
    pres_f = prf(*results["Presidio defaults (same spaCy model)"][1])[2]
    return ours_f, pres_f


# ---------------------------------------------------------------------------------------------------- injection


def rates(scores: np.ndarray, y: np.ndarray, t: float) -> tuple[float, float, float, float]:
    pred = scores >= t
    tp, fp = int((pred & (y == 1)).sum()), int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    p, r, f = prf(tp, fp, fn)
    return p, r, f, fp / max(int((y == 0).sum()), 1)


def reference_lr(sets: dict, encoder: Any) -> tuple[Any, float]:
    """The reference: LogisticRegression on one MiniLM embedding per prompt (truncated to 256 tokens), threshold
    at FPR ≤ 5% per source on 5-fold out-of-fold scores of the train splits."""
    from sklearn.linear_model import LogisticRegression

    texts = sets["deepset_train"][0] + sets["jackhhao_train"][0]
    y = np.concatenate([sets["deepset_train"][1], sets["jackhhao_train"][1]])
    src = np.array([0] * len(sets["deepset_train"][0]) + [1] * len(sets["jackhhao_train"][0]))
    x = inj.embed_cached(encoder, texts)
    fold = np.random.default_rng(0).integers(0, 5, size=len(texts))
    oof = np.zeros(len(texts))
    for f in range(5):
        clf = LogisticRegression(max_iter=2000).fit(x[fold != f], y[fold != f])
        oof[fold == f] = clf.predict_proba(x[fold == f])[:, 1]
    t = max(inj.threshold_at_fpr(oof[src == s], y[src == s]) for s in (0, 1))
    return LogisticRegression(max_iter=2000).fit(x, y), t


def bench_injection(lines: list[str], encoder: Any) -> tuple[float, float]:
    sets = inj.load_sets()
    selection = json.loads(SELECTION.read_text())
    variants = {"fast": InjectionModel.load(FAST_WEIGHTS), "full": InjectionModel.load()}
    default = selection["default"]
    model, other = variants[default], variants["full" if default == "fast" else "fast"]
    vec = ngram_vectorizer()
    ref, ref_t = reference_lr(sets, encoder)
    lines += ["## Injection / jailbreak", "",
              "Every choice is made by a fixed rule on validation data carved from the train splits (5-fold "
              "out-of-fold scores of deepset train + jackhhao train; the test splits and malignant are never read "
              f"by the training): {selection['rule']}. Validation (train splits, out-of-fold):", "",
              "| variant | C | threshold | deepset recall / FPR | jackhhao recall / FPR | mean recall | chosen |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, v in selection["variants"].items():
        for r in v["candidates"]:
            mark = "yes" if r == v["chosen"] else ""
            lines.append(f"| {name} | {r['c']:g} | {r['threshold']:.3f} | {r['recall_deepset']:.3f} / "
                         f"{r['fpr_deepset']:.3f} | {r['recall_jackhhao']:.3f} / {r['fpr_jackhhao']:.3f} | "
                         f"{r['mean_recall']:.3f} | {mark} |")  # fmt: skip
    lines += ["", f"Step default by the rule: `{default}` (eligible by the latency budget: "
              f"{', '.join(inj.DEFAULT_ELIGIBLE)}). Test numbers below, at the thresholds above (reference: "
              f"{ref_t:.3f}, its own out-of-fold FPR ≤ 5% rule). 'ours' is the default (`fast`: hashed character "
              "n-grams + heuristic families, every chunk); 'ours full' adds MiniLM embeddings of every chunk. "
              "malignant (jailbreak + act_as vs conversation) is a source never used for training or tuning.", "",
              f"| set | n (pos) | ours ({default}) P / R / F1 / FPR | ours {'full' if default == 'fast' else 'fast'} "
              "P / R / F1 / FPR | reference LR P / R / F1 / FPR |",
              "|---|---|---|---|---|"]  # fmt: skip
    recalls, fprs = [], []
    for name in ("deepset_test", "jackhhao_test", "malignant"):
        texts, y = sets[name]
        scores = {}
        for v, m in variants.items():
            pieces, owner = inj.chunked(texts, m.chunk_words, m.chunk_stride)
            emb = inj.embed_cached(encoder, pieces) if m.uses_embeddings else None
            scores[v] = inj.doc_scores(m.chunk_scores(design(emb, pieces, vec)), owner, len(texts))
        refs = ref.predict_proba(inj.embed_cached(encoder, texts))[:, 1]
        a = rates(scores[default], y, model.threshold)
        c = rates(scores["full" if default == "fast" else "fast"], y, other.threshold)
        b = rates(refs, y, ref_t)
        recalls.append(a[1])
        fprs.append(a[3])
        lines.append(f"| {name} | {len(y)} ({int(y.sum())}) | {a[0]:.3f} / {a[1]:.3f} / {a[2]:.3f} / {a[3]:.3f} | "
                     f"{c[0]:.3f} / {c[1]:.3f} / {c[2]:.3f} / {c[3]:.3f} | "
                     f"{b[0]:.3f} / {b[1]:.3f} / {b[2]:.3f} / {b[3]:.3f} |")  # fmt: skip
    lines += ["", f"Default model: mean recall over the three sets {np.mean(recalls):.3f}; highest FPR "
              f"{max(fprs):.3f}.", ""]  # fmt: skip
    return float(np.mean(recalls)), float(max(fprs))


# ---------------------------------------------------------------------------------------------------- toxicity


def bench_toxicity(lines: list[str], encoder: Any) -> float:
    sets = tox.load_sets()
    model = tox.LinearModel.load(tox.DEFAULT_WEIGHTS)
    vec = ngram_vectorizer()
    lines += ["## Toxicity", "",
              "Trained on 80% of Davidson (hate + offensive = toxic) and of the balanced Civil Comments sample; "
              f"threshold {model.threshold:.3f} maximises out-of-fold F1 on that training part.", "",
              "| set | n (toxic) | P | R | F1 |", "|---|---|---|---|---|"]  # fmt: skip
    held_scores, held_y = [], []
    for name in ("davidson_test", "civil_test", "jigsaw"):
        texts, y = sets[name]
        x, owner = tox.features(encoder, texts, vec, model.chunk_words, model.chunk_stride)
        s = inj.doc_scores(model.chunk_scores(x), owner, len(texts))
        if name != "jigsaw":
            held_scores.append(s)
            held_y.append(y)
        p, r, f, _ = rates(s, y, model.threshold)
        lines.append(f"| {name} | {len(y)} ({int(y.sum())}) | {p:.3f} | {r:.3f} | {f:.3f} |")
    p, r, f, _ = rates(np.concatenate(held_scores), np.concatenate(held_y), model.threshold)
    lines += [f"| held-out (Davidson + Civil) | {sum(len(v) for v in held_y)} | {p:.3f} | {r:.3f} | {f:.3f} |", ""]
    return f


# ---------------------------------------------------------------------------------------------------- latency


class _Embedder:
    """The product's in-process embedding backend (the default local deployment: MiniLM on ONNX Runtime, one
    thread) as the runtime's shared query embedder."""

    def __init__(self, backend: SentenceEmbeddingBackend) -> None:
        self.backend = backend

    def require(self, who: str) -> str:
        return "local-embed"

    async def embed(self, texts: list[str]) -> np.ndarray:
        return await self.backend.vectors(texts)

    async def query(self, ctx: RequestContext) -> np.ndarray:
        """Once per request, shared by the steps that need it (as the runtime's QueryEmbedder does)."""
        fut = ctx.state.get("bench.query")
        if fut is None:
            fut = ctx.state["bench.query"] = asyncio.ensure_future(self.embed([ctx.query_text()]))
        return (await asyncio.shield(fut))[0]


class _Services:
    def __init__(self, backend: SentenceEmbeddingBackend) -> None:
        self.embedder = _Embedder(backend)
        self.metrics = None
        self.closers: list[Any] = []

    def on_close(self, close: Any) -> None:
        self.closers.append(close)


async def _backend(runtime: str) -> SentenceEmbeddingBackend:
    be = SentenceEmbeddingBackend(LocalDeployment(provider="local", name="local-embed", runtime=runtime))
    await be.start()
    return be


def prompt_of(tokens: int, encoder: Any) -> str:
    docs = [d["full_text"] for d in json.loads(PII_TEST.read_text())]
    out, i = [], 0
    while len(encoder.tokenizer(" ".join(out))["input_ids"]) < tokens:
        out.append(docs[i % len(docs)])
        i += 1
    return " ".join(out)


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1000, q))


async def timed(steps: list[Any], req: ChatCompletionRequest, runs: int, cpu: list[float] | None = None) -> list[float]:
    """Wall seconds per run; ``cpu`` collects the process's CPU seconds per run (all threads), which other
    processes on the machine do not inflate."""
    out = []
    for i in range(runs + 3):
        ctx = RequestContext(request=req, request_id="b", model="m")
        t0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(s.run(ctx) for s in steps))
        if i >= 3:  # warm-up
            out.append(time.perf_counter() - t0)
            if cpu is not None:
                cpu.append(time.process_time() - c0)
    return out


def timed_sync(fn: Any, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


@contextlib.contextmanager
def bench_lock() -> Any:
    """The machine's shared timing lock: only one latency measurement runs at a time (quality metrics don't
    need it)."""
    with open(LOCK, "a") as f:
        t0 = time.time()
        fcntl.flock(f, fcntl.LOCK_EX)
        print(f"bench lock acquired after {time.time() - t0:.0f} s", file=sys.stderr)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


async def bench_latency(lines: list[str], encoder: Any) -> float:
    with bench_lock():
        return await _bench_latency(lines, encoder)


async def _bench_latency(lines: list[str], encoder: Any) -> float:
    backend = await _backend("onnx")
    services = _Services(backend)
    default = [pii_step({}, services), injection_step({}, services), topics_step(TOPICS, services)]
    full = [pii_step({}, services), injection_step({"model": "full"}, services), topics_step(TOPICS, services)]
    in_process = [pii_step({"ner_process": False}, services), *default[1:]]
    presidio = load_presidio()
    lines += ["## Latency", "",
              "Default input set = `pii` (regex/checksum + spaCy NER) ∥ `injection` (default model: n-grams + "
              "heuristics on every chunk of the whole prompt) ∥ `topics` (two denied topics: keywords + "
              "similarity of the shared MiniLM query embedding), run concurrently as in a `use: parallel` group, "
              "in-process, one thread each (the embedder on ONNX Runtime, the product default; the spaCy NER in its "
              "worker process, also the default), on a prompt built from presidio-research texts. The second column "
              "uses `injection: {model: full}` (MiniLM on every chunk; 30 runs, 10 at 4k, as for Presidio alone). "
              "Milliseconds, p50 / p99; 'CPU' is the "
              "server process's CPU time per run of the default set (median; the NER worker's is not in it), which "
              "other work on the machine does not inflate. Load average when the timings started: "
              f"{os.getloadavg()[0]:.2f}.", "",
              "| prompt tokens | runs | default input set | default set CPU | with injection model full | "
              "regex tier alone | Presidio alone |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    p99_1k = 0.0
    alone = ""
    for tokens, runs in ((100, 100), (1000, 120), (4000, 30)):
        text = prompt_of(tokens, encoder)
        req = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": text}])
        cpu: list[float] = []
        a = await timed(default, req, runs, cpu)
        b = await timed(full, req, min(runs, 30) if tokens < 4000 else 10)  # a peer column: fewer runs
        r = timed_sync(lambda t=text: regex_hits(t), runs)
        p = timed_sync(lambda t=text: presidio.analyze(t, language="en"), min(runs, 30) if tokens < 4000 else 10)
        if tokens == 1000:
            p99_1k = pct(a, 99)
            each = {s.name: await timed([s], req, runs) for s in default}
            alone = ", ".join(f"`{k}` {pct(v, 50):.1f} / {pct(v, 99):.1f}" for k, v in each.items())
            torch_topics = topics_step(TOPICS, _Services(await _backend("torch")))
            v = await timed([torch_topics], req, runs)
            alone += f"; `topics` with the embedder on torch (`runtime: torch`) {pct(v, 50):.1f} / {pct(v, 99):.1f}"
            in_cpu: list[float] = []
            v = await timed(in_process, req, runs, in_cpu)
            alone += (f". The default set with the NER in the server's process (`ner_process: false`, as before): "
                      f"{pct(v, 50):.1f} / {pct(v, 99):.1f}, CPU {pct(in_cpu, 50):.1f}")  # fmt: skip
        lines.append(f"| {tokens} | {runs} | {pct(a, 50):.1f} / {pct(a, 99):.1f} | {pct(cpu, 50):.1f} | "
                     f"{pct(b, 50):.1f} / {pct(b, 99):.1f} | {pct(r, 50):.2f} / {pct(r, 99):.2f} | "
                     f"{pct(p, 50):.1f} / {pct(p, 99):.1f} |")  # fmt: skip
    lines += ["", f"Each step of the default set alone at 1k tokens (p50 / p99 ms): {alone}. The topics step's "
              "cost is the MiniLM query embedding (first 256 tokens), which a pipeline with a semantic cache or "
              "an embedding router computes anyway (one per request, shared).", "", TRIED_LATENCY, ""]  # fmt: skip
    for close in services.closers:
        await close()
    return p99_1k


def machine() -> list[str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return [f"- CPU: {cpu}; cores: {os.cpu_count()}; Python {platform.python_version()}; "
            f"date {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; load average at start "
            f"{os.getloadavg()[0]:.2f} (the machine is shared with other work; torch and BLAS use one thread)"
            ]  # fmt: skip


def main() -> None:
    import torch

    torch.set_num_threads(1)
    encoder = inj.load_encoder()
    lines = ["# Guardrails benchmark", "", *machine(), ""]
    t0 = time.time()
    pii_f1, presidio_f1 = bench_pii(lines)
    recall, fpr = bench_injection(lines, encoder)
    tox_f1 = bench_toxicity(lines, encoder)
    p99 = asyncio.run(bench_latency(lines, encoder))
    lines += [f"Run time {time.time() - t0:.0f} s; load average at end {os.getloadavg()[0]:.2f}.", "",
              f"guardrails pii_f1={pii_f1:.3f} presidio_f1={presidio_f1:.3f} injection_recall={recall:.3f} "
              f"injection_fpr={fpr:.3f} toxicity_f1={tox_f1:.3f} p99_ms_1k={p99:.1f}"]  # fmt: skip
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
