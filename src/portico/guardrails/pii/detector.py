"""PII detection: the regex/checksum tier plus an NER tier, merged into non-overlapping typed spans.

NER tiers (``ner:``):
- ``spacy`` (default): the packaged spaCy model's entity recognizer alone (PERSON, GPE/LOC, ORG, NORP,
  DATE/TIME), every other pipe disabled: the fastest way to get names.
- ``presidio``: Microsoft Presidio's AnalyzerEngine (default recognizers on the same spaCy model), merged
  with the regex tier. Slower; kept for parity with Presidio's own results.
- ``none``: the regex/checksum tier alone (a few milliseconds on a 1k-token prompt).

With ``ner: spacy`` the name and place lexicons (``lexicon``) check and complete the NER's entities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from threadpoolctl import ThreadpoolController

from portico.guardrails.pii.addresses import components, letterhead_organizations
from portico.guardrails.pii.lexicon import Lexicon, legal_form, org_evidence
from portico.guardrails.pii.ner import SPACY_MODEL, NerProcess, load_spacy
from portico.guardrails.pii.recognizers import Hit, regex_hits

NerTier = Literal["spacy", "presidio", "none"]

_SPACY_TYPES = {
    "PERSON": ("PERSON", 0.85),
    "GPE": ("LOCATION", 0.8),
    "LOC": ("LOCATION", 0.8),
    "ORG": ("ORGANIZATION", 0.6),
    "NORP": ("NRP", 0.6),
    "DATE": ("DATE_TIME", 0.6),
    "TIME": ("DATE_TIME", 0.6),
    "ADDRESS": ("ADDRESS", 0.8),  # only the tuned NER has this label
}
# Regex-tier types that no NER entity contains.
_STRUCTURED = frozenset({"PHONE_NUMBER", "EMAIL_ADDRESS", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "URL"})
_FIELD_LABEL = re.compile(r"\n[ \t]*[^\W\d][\w .-]{0,20}$")  # "...\nMobile" before ": 0490 39 07 81"
_LEAD_WORD = re.compile(r"([A-Z][a-z]+)\s+(?=[A-ZÀ-ÖØ-Þ\u0100-\u017f])")  # a capitalised word before another
_NOT_NAMES = frozenset({"IBAN", "SSN", "IP", "API", "URL", "ID", "PIN", "CVV", "DOB", "VIN", "IBAN CODE", "EMAIL"})
_NUMBERS_ONLY = re.compile(r"[\d\s]+")
_CONCRETE_DATE = re.compile(
    r"\d|(?i:\b(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sept?(?:ember)?|"
    r"oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\b)"
)
_PERSON_CUE = re.compile(r"(?:name is|I'm|I am|\bMrs?\.?|\bMs\.?|\bDr\.?|\bDear|\bthis is)\s+$", re.IGNORECASE)
_PLACE_CUE = re.compile(
    r"(?:\bgrew up in|\bborn in|\b(?:I|we) (?:am|are|was|were) in|\b(?:I|we)'(?:m|re) in|\bli(?:ve|ved|ving) in|"
    r"\bmoved to|\breturned to|\boriginally from|\bflew to|\btravel(?:l?ed|l?ing)? to)\s+$",
    re.IGNORECASE,
)
# Presidio's entity names → Portico's (most are the same).
_PRESIDIO_TYPES = {"DOMAIN_NAME": "URL", "CRYPTO": "API_KEY", "US_BANK_NUMBER": "US_BANK_NUMBER"}


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int
    type: str
    score: float
    text: str


def offline_tldextract() -> None:
    """Presidio's email/URL recognizers call tldextract, which would fetch the public suffix list: use only the
    snapshot bundled with the package (no network at run time)."""
    import tldextract.tldextract as tx

    tx.TLD_EXTRACTOR.suffix_list_urls = ()
    tx.TLD_EXTRACTOR.fallback_to_snapshot = True


def load_presidio(model: str = SPACY_MODEL) -> Any:
    offline_tldextract()
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    conf = {"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    return AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine())


def merge(text: str, hits: list[Hit]) -> list[Span]:
    """Non-overlapping spans: checksum-validated hits first, then longer spans, then higher scores."""
    order = sorted(hits, key=lambda h: (h[3] < 0.9, -(h[1] - h[0]), -h[3]))
    taken: list[tuple[int, int]] = []
    out: list[Span] = []
    for start, end, typ, score in order:
        if end <= start or any(start < e and s < end for s, e in taken):
            continue
        taken.append((start, end))
        out.append(Span(start, end, typ, score, text[start:end]))
    out.sort(key=lambda s: s.start)
    return out


class PIIDetector:
    def __init__(
        self,
        ner: NerTier = "spacy",
        model: str = SPACY_MODEL,
        min_score: float = 0.5,
        ner_weights: str | Path | None = None,
        nlp: Any = None,
        lexicon: bool = True,
        organizations: Literal["all", "evidence"] = "all",
        ner_process: bool = False,
    ) -> None:
        """``nlp``: an already loaded pipeline to use as is (the trainer scores the one it is training).
        ``ner_process``: run the spaCy NER in a worker process (ner.py): it holds the GIL, so in-process
        it serialises with every other Python step; call ``close()`` to stop the worker.
        ``lexicon``: check and complete the spaCy tier's entities with name and place lists (see lexicon.py).
        ``organizations: evidence``: an NER organisation counts only with a legal form or an employer cue (fewer
        prompts garbled by masked acronyms, but a person's name the model calls an ORG then goes unmasked)."""
        self.ner = ner
        self.min_score = min_score
        self._lexicon = Lexicon.load() if lexicon and ner == "spacy" else None
        self._org_evidence = organizations == "evidence"
        self._worker = NerProcess(model, ner_weights) if ner == "spacy" and ner_process and nlp is None else None
        self._nlp = (nlp or load_spacy(model, ner_weights)) if ner == "spacy" and self._worker is None else None
        # OpenBLAS would otherwise spin up a thread per core for these small products (2x the CPU on 2 cores).
        self._blas = ThreadpoolController() if self._nlp is not None else None
        self._presidio = load_presidio(model) if ner == "presidio" else None

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()

    def _entities(self, text: str) -> tuple[list[Hit], Any]:
        """The regex tier's hits and the NER's entities; with a worker process the regex tier runs meanwhile."""
        if self._worker is not None:
            with self._worker.lock:
                self._worker.send(text)
                out = regex_hits(text)
                return out, self._worker.receive(text)
        out = regex_hits(text)
        if self._nlp is None:
            return out, None
        assert self._blas is not None
        with self._blas.limit(limits=1, user_api="blas"):
            return out, self._nlp(text)

    def hits(self, text: str) -> list[Hit]:
        out, doc = self._entities(text)
        exact = [(h[0], h[1]) for h in out if h[2] in _STRUCTURED and h[3] >= 0.7]
        if doc is not None:
            for ent in doc.ents:
                mapped = _SPACY_TYPES.get(ent.label_)
                if mapped is None or ent.text.upper() in _NOT_NAMES:
                    continue
                s, e = _trim(text, ent.start_char, ent.end_char)
                if mapped[0] != "ADDRESS" and (nl := text.find("\n", s, e)) > s:
                    s, e = _trim(text, s, nl)  # a name or a place ends at the line's end ("Allan\nEchocardiographer")
                if any(s < b and a < e for a, b in exact):
                    continue  # a name or an address that ran on over a phone number or a card the regex tier owns
                typ, score = mapped
                if typ == "DATE_TIME" and _NUMBERS_ONLY.fullmatch(text[s:e]) and len(text[s:e]) != 4:
                    continue  # postcodes and digit groups, not dates (a lone 4-digit year stays)
                if typ == "DATE_TIME" and not _CONCRETE_DATE.search(text, s, e):
                    continue  # "last night", "a few months ago", "the weekend": no date that identifies anyone
                if typ in ("ORGANIZATION", "LOCATION", "NRP") and _PERSON_CUE.search(text, max(0, s - 16), s):
                    typ, score = "PERSON", 0.85  # "my name is Rubija": the small model often calls it an ORG
                elif typ in ("ORGANIZATION", "PERSON") and _PLACE_CUE.search(text, max(0, s - 24), s):
                    typ, score = "LOCATION", 0.8  # "grew up in KNIVSTA", "I am in Rohod": a place, whatever its form
                out.append((s, e, typ, score))
            if self._lexicon is not None:
                out = self._with_lexicon(text, out, self._lexicon)
        elif self._presidio is not None:
            for r in self._presidio.analyze(text, language="en"):
                out.append((r.start, r.end, _PRESIDIO_TYPES.get(r.entity_type, r.entity_type), float(r.score)))
        out = [h for h in out if h[3] >= self.min_score]
        names = [(h[0], h[1]) for h in out if h[2] == "PERSON"]
        common = self._lexicon.is_english if self._lexicon is not None else None

        def is_person(s: int, e: int) -> bool:
            return any(a <= s and e <= b for a, b in names)

        return letterhead_organizations(text, components(text, out, is_person, common), is_person)

    def _with_lexicon(self, text: str, hits: list[Hit], lex: Lexicon) -> list[Hit]:
        out: list[Hit] = []
        for s, e, typ, score in hits:
            lead = _LEAD_WORD.match(text, s, e) if typ == "PERSON" else None
            if lead and " " in text[lead.end() : e] and lex.is_english(lead[1]) and not lex.is_first_name(lead[1]):
                s = lead.end()  # "Producer Liviana Palerma": the job before a full name is no part of it
            span = text[s:e]
            if typ in ("ORGANIZATION", "PERSON") and legal_form(text, s, e):
                typ = "ORGANIZATION"  # "Russell Investments", "Opportunityspace Inc": a company whatever its words
            elif typ == "PERSON" and org_evidence(text, s, e) and not lex.has_name(span):
                typ = "ORGANIZATION"  # "I work for Flightstats": an employer, and no known name in it
            elif typ in ("ORGANIZATION", "LOCATION") and lex.is_place(span):
                typ, score = "LOCATION", max(score, 0.8)  # a listed country or city ("Sierra Leone" called an ORG)
            elif (typ == "ORGANIZATION" or (typ == "LOCATION" and len(span.split()) >= 2)) and lex.is_person(span):
                typ, score = "PERSON", 0.85  # "Bekbolat Musliyevich" called an ORG
            elif typ == "ORGANIZATION" and not org_evidence(text, s, e):
                if lex.has_name(span):
                    typ = "PERSON"  # no sign of a company and a known name in it: more often a person (still masked)
                elif self._org_evidence:
                    score = 0.45  # under the default min_score: the ORG needs a legal form or an employer cue
            out.append((s, e, typ, score))
        out += lex.hits(text)
        return out + lex.firms(text, out)

    def detect(self, text: str) -> list[Span]:
        if not text:
            return []
        return merge(text, self.hits(text))


_TRAILING = ".,;:'\" \u2019"
_POSSESSIVE = ("'s", "\u2019s")


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """spaCy entities sometimes carry a possessive or trailing punctuation, or run on into the next line's field
    label ("Mobile:", "Fax:"): keep the name or address itself."""
    label = _FIELD_LABEL.search(text, start, end)
    if label is not None and text[end:].lstrip(" \t").startswith(":"):
        end = label.start()
    while end > start and text[end - 1] in _TRAILING:
        end -= 1
    if text[start:end].endswith(_POSSESSIVE):
        end -= 2
    return start, end
