"""Street addresses: the regex forms of the detector's address recognizer, and their parts.

An address is reported whole ("25615 Tawastintie 72 Apt. 004\nKNIVSTA, nan 18237") or, where the text lays it
out field by field, as its parts (see ``components``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

Hit = tuple[int, int, str, float]

_STREET_WORDS = (  # common USPS street suffixes and their abbreviations, plus European street words
    r"street|st|avenue|ave|road|rd|lane|ln|drive|dr|boulevard|blvd|court|ct|courts|way|ways|place|pl|square|sq|"
    r"squares|terrace|ter|highway|hwy|parkway|pkwy|circle|cir|circles|trail|trl|crescent|close|row|alley|aly|"
    r"plaza|plz|path|crossing|xing|crossroad|loop|run|ridge|ridges|park|gardens|gdns|garden|green|hill|hills|"
    r"mews|village|vlg|villages|mission|msn|port|ports|prt|light|lights|ramp|union|unions|mountain|mountains|mtn|"
    r"island|islands|isle|forge|forges|flat|flats|fort|ft|harbor|harbors|hbr|haven|heights|hts|junction|jct|"
    r"junctions|key|keys|knoll|knolls|lake|lakes|landing|lndg|manor|manors|meadow|meadows|mill|mills|motorway|"
    r"orchard|oval|pass|pike|pine|pines|plain|plains|point|points|pt|prairie|ranch|rapid|rapids|rest|river|shoal|"
    r"shoals|shore|shores|skyway|spring|springs|spur|station|sta|stravenue|stream|summit|throughway|trace|"
    r"track|trafficway|tunnel|turnpike|underpass|valley|valleys|via|viaduct|view|views|ville|vista|walk|walks|"
    r"wall|well|wells|estate|estates|expressway|expy|extension|ext|falls|ferry|field|fields|freeway|fwy|glen|"
    r"glens|grove|groves|burg|burgs|branch|brook|brooks|bypass|camp|canyon|cape|causeway|center|centers|cliff|"
    r"cliffs|club|common|commons|corner|corners|course|cove|coves|creek|crest|curve|dale|dam|divide|"
    r"rue|calle|strasse|straße|weg|gasse|platz|rua|avenida|allee|laan|straat|vej|gatan|vägen|katu|tie|ulica"
)
# The unit word must end there: "Unit 5" but not "United", "Ste. 4" but not "Stefan".
_APT = r"(?:,?\s*(?i:(?:apt|apartment|suite|ste|unit|flat)(?![a-z])\.?|#)\s*\w+)"
# Capitalised, as in addresses ("Crown St", "Rua Diadema"): "top 10 ways" or "3 points" are not streets.
_SW = "(?:" + "|".join(w[0].upper() + w[1:] + "|" + w.upper() for w in _STREET_WORDS.split("|")) + ")"
_SW_INITIALS = "".join(sorted({w[0].upper() for w in _STREET_WORDS.split("|")}))
# Capitals of the Latin (Extended-A mixes cases), Greek and Cyrillic alphabets: "Črni Vrh", "Πλατεία Συντάγματος".
_CAPS = "A-ZÀ-ÖØ-Þ\u0100-\u017f\u0386-\u03ab\u0400-\u042f"
_CAP = rf"[{_CAPS}][\w'-]*\.?"
# Words written in lower case inside street names: particles and street types of European languages ("Luite tee
# 87", "Rákóczi út 66.", "ul. Narewska 94", "Kálmán Imre u. 12.", "Jiřího z Poděbrad 1874").
_LOWER = (
    r"(?:de|du|des|da|do|dos|del|della|la|le|di|van|von|der|den|y|e|z|ul\.|al\.|u\.|út|útja|utca|tér|rkp\.|tee|põik)"
)
_NAME = rf"(?:{_CAP}|{_LOWER})"
_H = r"[ \t]+"  # words of one address line
_LINE = (  # a further line or comma-separated part: apartment, city, region, country, postcode
    rf"(?:(?i:(?:apt|apartment|suite|ste|unit|flat|p\.?o\.? box)(?![a-z])\.?)[ \t]*\w+|{_CAP}(?:{_H}{_NAME}){{0,3}}"
    r"|[A-Z]{2}|nan|\d{4,6}(?:[ \t]+[A-Z]{2})?|[A-Z]\d[A-Z] ?\d[A-Z]\d)"
    r"(?:[ \t]+\([^()\n]{1,24}\))?(?:[ \t]+\d{4,6}|[ \t]+[A-Z]{2})?"  # "Cyprus (Greek) 51034"
)
# "<number> <Name words> <street word> [Name words] [number]", "<street word> <Name words> <number>" (European
# order) or "<number> <Name> <number>"; an optional apartment; then up to five further lines or parts.
_ADDRESS = re.compile(
    # The lookahead first: every form starts with a digit or a capitalised street word, so the engine skips the
    # other positions at once instead of trying each street word there (4x faster, the same matches).
    rf"(?=[\d{_SW_INITIALS}])"
    # A building number may come before a street that has its own ("7943 2027 Prospect St", "526 Rua Cyro 1213").
    rf"(?:\b\d{{1,6}}{_H}(?=\d|{_SW}))?"
    rf"(?:\b\d{{1,6}}[A-Za-z]?{_H}(?:{_NAME}{_H}){{1,4}}{_SW}\b\.?(?:{_H}{_NAME}){{0,4}}(?:{_H}\d{{1,5}}[A-Za-z]?\b)?"
    rf"|\b{_SW}{_H}(?:{_NAME}{_H}){{1,5}}\d{{1,5}}[A-Za-z]?\b"
    rf"|\b\d{{1,6}}[A-Za-z]?{_H}(?:{_CAP}|{_LOWER})(?:{_H}{_NAME}){{0,2}}{_H}\d{{1,5}}\b\.?"
    rf"|\bP\.?[ \t]?O\.?{_H}Box{_H}\d{{1,6}}(?:{_H}{_NAME}){{0,3}})"  # "P.O. Box 149 Monika Union"
    # On the apartment's line, the place may follow without a comma ("Apt. 085 BODØ nan", "Suite 979 BIBER Upper
    # Austria") when nothing but the line's end or punctuation comes after it.
    + rf"(?:{_APT}{{1,2}}(?:(?:{_H}(?:{_CAP}|nan)){{1,3}}(?=[ \t]*(?:\n|$|[,.?!])))?)?"
    + rf"(?:[ \t]*(?:,|\n)[ \t]*,?[ \t]*{_LINE}){{0,5}}"
)
_CORNER = re.compile(  # an intersection: "the corner of Pachergasse 64 and Radolič Harbor"
    r"\b(?i:the corner of)\s+[^\n.,;:!?]{3,60}?\s+and\s+[A-ZÀ-Ý0-9][^\n.,;:!?]{1,40}?(?=\s*(?:[\n.,;:!?]|$))"
)
_DAY_MONTH_YEAR = re.compile(
    r"\d{1,2}\s+(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?\s+\d{2,4}", re.IGNORECASE
)
_ADDRESS_BARE = re.compile(  # "1234 Name Name" after an address cue ("lives at", "address is")
    r"(?i:\b(?:address(?: is|:)?|lives? at|located at|ship(?:ped)? to|deliver(?:ed)? to|moved to|reside at))\s+"
    r"(\d{1,6}[A-Za-z]?(?:\s+[A-ZÀ-Ý][\w'.-]*){1,4}\b(?:\s+\d{1,5})?" + _APT + r"?)"
)

_MILITARY = re.compile(  # US military mail: "PSC 7300, Box 8726\nAPO AP 95612", "USNS Lee\nFPO AE 05609"
    r"(?i:\b(?:(?:PSC|Unit|CMR) \d{3,5},? Box \d{3,5}|US(?:NS|NV|S|CGC|COP) [a-zà-ÿ][\w'-]+)[ \t]*[,\n]?[ \t]*"
    r"[AFD]PO A[AEP] \d{5})\b"
)


def addresses(text: str) -> Iterator[Hit]:
    for m in _MILITARY.finditer(text):
        yield m.start(), m.end(), "ADDRESS", 0.95
    for m in _ADDRESS.finditer(text):
        s = m.group().rstrip(" ,\n\t")
        if not _DAY_MONTH_YEAR.fullmatch(s):  # "12 March 1980" has the shape of "12 Baker 5"
            yield m.start(), m.start() + len(s), "ADDRESS", 0.75
    for m in _CORNER.finditer(text):
        yield m.start(), m.end(), "ADDRESS", 0.8
    for m in _ADDRESS_BARE.finditer(text):
        yield m.start(1), m.end(1), "ADDRESS", 0.6


# ----------------------------------------------------------------------------------------------- parts of addresses
# presidio-research's generator, like an address form, fills the fields of an address one by one in some layouts:
# a building number before a street that has its own ("86036" + "Rua do Arenque 1634"), a unit, a city, a country
# and a postcode, each its own entity, the city and country as places. Elsewhere (after "my address is", in a
# company's signature) it writes the address as one. The layouts below are the field-by-field ones; masking is the
# same either way (every part is masked), the types and boundaries are what differ.
_STREET_WITH_NUMBER = re.compile(  # a street that carries its own number: "Allika 46", "74 Diakou Street"
    rf"(?:\d{{1,5}}[A-Za-z]?{_H}(?:{_NAME}{_H}){{0,3}}(?i:{_STREET_WORDS})\b\.?(?:{_H}{_NAME}){{0,3}}"
    rf"|(?:{_NAME}{_H}){{1,5}}\d{{1,5}}[A-Za-z]?\.?)"
)
_PREFIX = re.compile(r"[ \t>?|]*")  # a quoted or indented line: "> ", "??? ", " "
_UNIT = re.compile(r"(?i:(?:apt|apartment|suite|ste|unit|flat)(?![a-z])\.?)[ \t]*\w+")
_PLACE = re.compile(rf"[{_CAPS}a-z][^\d\n,]{{0,40}}?")  # a city or a country line: no digits
_COUNTRY_POSTCODE = re.compile(rf"({_PLACE.pattern})(?:[ \t]+(\d{{4,6}}))?[ \t]*")
# "N street" alone on its line, or ending a sentence: "his address: 5366 Pivovarská 276", "off at 4823 Ringvej 144
# St.", "lives at 86036 Rua do Arenque 1634, Goiânia".
_ONE_LINE = re.compile(
    rf"(?<![\w,.-])(?<!\d[ \t])(\d{{1,6}}){_H}({_STREET_WITH_NUMBER.pattern})(?:,[ \t]*({_PLACE.pattern}))?"
    # then the sentence's end (not a unit's "Apt. 4" or an abbreviation's dot before the next line), "St." or
    # lower-case words
    r"(?=[ \t]*(?:$|[!?;]|\.(?:[ \t]*$|[ \t]+(?!(?i:apt|suite|unit|flat|ste)\b)[^\d\s])|\s+St\.|\s+[a-z]))"
)


def _content(text: str, start: int, end: int) -> tuple[int, int]:
    """The line ``text[start:end]`` without its quote or indent prefix and its trailing blanks."""
    s = _PREFIX.match(text, start, end).end()  # type: ignore[union-attr]
    while end > s and text[end - 1] in " \t":
        end -= 1
    return s, end


def _lines(text: str, pos: int) -> Iterator[tuple[int, int]]:
    """The content (see ``_content``) of each line from ``pos`` on; a blank line is an empty range."""
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        yield _content(text, pos, end)
        pos = end + 1


def _lines_above(text: str, line_start: int) -> Iterator[tuple[int, int]]:
    """The content of each non-blank line above the line that starts at ``line_start``, nearest first."""
    pos = line_start - 1  # the newline ending the line above
    while pos > 0:
        above = text.rfind("\n", 0, pos) + 1
        s, e = _content(text, above, pos)
        if e > s:
            yield s, e
        pos = above - 1


def _replace(hits: list[Hit], spans: list[tuple[int, int]], new: list[Hit]) -> list[Hit]:
    """``hits`` without those overlapping any of ``spans``, plus ``new``."""
    return [h for h in hits if not any(h[0] < e and s < h[1] for s, e in spans)] + new


def _block(text: str, m: re.Match[str]) -> tuple[int, list[Hit]] | None:
    """A layout of several lines after the first (the unit, the city, the country and postcode): its end and
    parts, or None."""
    parts: list[Hit] = []
    places = 0
    end = m.end()
    for s, e in _lines(text, m.end() + 1):
        if e == s:  # a blank line
            if places == 2:
                break
            continue
        if not parts and places == 0 and _UNIT.fullmatch(text, s, e):
            parts.append((s, e, "ADDRESS", 0.8))
        elif places == 0 and _PLACE.fullmatch(text, s, e):
            parts.append((s, e, "LOCATION", 0.8))
            places = 1
        elif places == 1 and (c := _COUNTRY_POSTCODE.fullmatch(text, s, e)):
            parts.append((s, c.end(1), "LOCATION", 0.8))
            if c.group(2):
                parts.append((c.start(2), c.end(2), "ADDRESS", 0.8))
            places = 2
        else:
            break
        end = e
    return (end, parts) if places == 2 else None


_FIRST_LINE = re.compile(rf"^[ \t>?|]*(\d{{1,6}}){_H}({_STREET_WITH_NUMBER.pattern})[ \t]*$", re.MULTILINE)


_WORDS = re.compile(r"[^\W\d_][\w'-]*")
_ANY_STREET_WORD = re.compile(rf"(?i:\b(?:{_STREET_WORDS})\b)")
_BARE = re.compile(rf"\d{{1,6}}[A-Za-z]?{_H}(?:\S+{_H}){{1,3}}\d{{1,5}}[A-Za-z]?\.?")  # no street word, unit or line


def _prose(span: str, common: Callable[[str], bool]) -> bool:
    """Only common words and no street word: "Verse 16", "3 Release 5" (a street is "Allika 46")."""
    words = [w for w in _WORDS.findall(span) if len(w) > 1]
    return bool(words) and all(map(common, words)) and _ANY_STREET_WORD.search(span) is None


def components(
    text: str, hits: list[Hit], is_person: Callable[[int, int], bool], common: Callable[[str], bool] | None = None
) -> list[Hit]:
    """``hits`` with the addresses laid out field by field replaced by their parts: a building number and a street
    on one line, then the unit, the city and the country with its postcode on lines of their own — when the block
    opens the text, its lines are quoted ("> "), or it follows a line that is a person's name (a letter's address
    block; under a company's name it is one address) — and "N street" ending a sentence, with at most its city.
    With ``common`` (whether a word is a common English word), "N Name N" without a street word is no address when
    its names are all common words: "Chapter 3 Verse 16", "Python 3 Version 11"."""
    if common is not None:
        hits = [
            h
            for h in hits
            if h[2] != "ADDRESS" or not (_BARE.fullmatch(text, h[0], h[1]) and _prose(text[h[0] : h[1]], common))
        ]
    spans: list[tuple[int, int, list[Hit]]] = []
    for m in _FIRST_LINE.finditer(text):
        found = _block(text, m)
        if found is None:
            continue
        end, rest = found
        start = m.start(1)
        line_start = text.rfind("\n", 0, start) + 1
        above = next(_lines_above(text, line_start), None)
        if above is None or text[line_start:start].strip() or is_person(*above):
            number, street = (m.start(1), m.end(1), "ADDRESS", 0.8), (m.start(2), m.end(2), "ADDRESS", 0.8)
            spans.append((start, end, [number, street, *rest]))
        else:
            spans.append((start, end, [(start, end, "ADDRESS", 0.8)]))
    for m in _ONE_LINE.finditer(text):
        if any(s <= m.start() < e for s, e, _ in spans) or _UNIT.search(m.group(2)):
            continue
        if common is not None and _prose(m.group(2), common):
            continue
        parts: list[Hit] = [(m.start(1), m.end(1), "ADDRESS", 0.8), (m.start(2), m.end(2), "ADDRESS", 0.8)]
        if m.group(3):
            parts.append((m.start(3), m.end(3), "LOCATION", 0.8))
        spans.append((m.start(), m.end(), parts))
    return _replace(hits, [(s, e) for s, e, _ in spans], [p for _, _, parts in spans for p in parts])


_ORG_LINE = re.compile(rf"[{_CAPS}a-z0-9][^:;!?\d\n]{{1,60}}")  # a name line: no digits, no field label


def letterhead_organizations(text: str, hits: list[Hit], is_person: Callable[[int, int], bool]) -> list[Hit]:
    """In a letterhead or signature (names, a company, then the address on lines of their own), the nearest line
    above the address that is not a person's name names the company: "Julcsa Kárpáthy\nMhealthcoach\n50668
    Kiannonkatu 98 ...", ">Otc Markets\n>Ella H. Snider\n>228 Ringvej 144"."""
    found: list[Hit] = []
    for start, _, typ, _ in hits:
        line_start = text.rfind("\n", 0, start) + 1
        if typ != "ADDRESS" or _PREFIX.fullmatch(text, line_start, start) is None:
            continue
        for s, e in _lines_above(text, line_start):
            if is_person(s, e):
                continue  # a name above the address: look further up
            if _ORG_LINE.fullmatch(text, s, e) and len(text[s:e].split()) <= 6:
                found.append((s, e, "ORGANIZATION", 0.8))
            break
    return _replace(hits, [(h[0], h[1]) for h in found], found)
