"""The regex/checksum tier: fast recognizers with validation where a checksum exists.

Each recognizer yields ``(start, end, entity_type, score)``. Types are Portico's canonical ones (see
``ENTITY_TYPES``); the NER tier adds PERSON, LOCATION, ORGANIZATION, NRP and DATE_TIME.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator

from portico.guardrails.pii.addresses import addresses

Hit = tuple[int, int, str, float]

ENTITY_TYPES = (
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "URL", "API_KEY",
    "ADDRESS", "ZIP_CODE", "DATE_TIME", "PERSON", "LOCATION", "ORGANIZATION", "NRP", "TITLE", "AGE",
    "US_DRIVER_LICENSE",
)  # fmt: skip


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(iban: str) -> bool:
    s = iban.replace(" ", "").upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    num = "".join(str(int(c, 36)) for c in moved)
    return int(num) % 97 == 1


_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,24}\b")
# Each numeric pattern opens with a lookahead on its first character: the engine skips other positions at once
# (about half the time, the same matches).
_CARD = re.compile(r"(?=\d)(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_SSN = re.compile(r"(?=\d)(?<![\d-])(\d{3})([- ])(\d{2})\2(\d{4})(?![\d-])")
_PHONE = re.compile(
    r"(?=[\d+(])(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{1,4}\)[\s.-]?|\(0\)\s?)?\d{2,5}(?:[\s.-]?\d{2,5}){1,4}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,5})?(?![\w])"
)
_IPV4 = re.compile(r"(?=\d)(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?![\d.])")
_IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>\"'()]+[^\s<>\"'().,;:!?]", re.IGNORECASE)
_SECRETS = re.compile(
    r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|"
    r"xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|glpat-[A-Za-z0-9_-]{20}|"
    r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,})"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
)
_ASSIGNED_SECRET = re.compile(
    r"(?i)\b(?:api[_-]?key|secret|token|password|passwd|pwd|access[_-]?key)\b\s*[:=]\s*[\"']?([^\s\"',;]{8,})"
)
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}(?:[ T]\d{2}:\d{2}(?::\d{2})?)?\b|\b\d{1,2}/\d{1,2}/\d{2,4}\b")


def _emails(text: str) -> Iterator[Hit]:
    for m in _EMAIL.finditer(text):
        yield m.start(), m.end(), "EMAIL_ADDRESS", 1.0


def _cards(text: str) -> Iterator[Hit]:
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn_ok(digits) and len(set(digits)) > 1:
            yield m.start(), m.end(), "CREDIT_CARD", 1.0


# A card number after its label even when the checksum fails: a mistyped card number is still one, and it is
# better masked than sent on (or taken for a phone number).
_LABELLED_CARD = re.compile(r"(?i:\bcard\s*(?:number|no\.?|#)?\s*(?:is|:|#)?\s*)((?:\d[ -]?){11,18}\d)(?![\d-])")


def _after_label(pattern: re.Pattern[str], hint: str, typ: str, score: float) -> Callable[[str], Iterator[Hit]]:
    """A recognizer for the value in group 1 of ``pattern``, scanned only when the lower-cased text contains
    ``hint`` (a substring test costs microseconds, the regex scan a tenth of a millisecond)."""

    def recognize(text: str) -> Iterator[Hit]:
        if hint in text.lower():
            for m in pattern.finditer(text):
                yield m.start(1), m.end(1), typ, score

    return recognize


_labelled_cards = _after_label(_LABELLED_CARD, "card", "CREDIT_CARD", 0.92)


def _ibans(text: str) -> Iterator[Hit]:
    for m in _IBAN.finditer(text):
        if iban_ok(m.group()):
            yield m.start(), m.end(), "IBAN_CODE", 1.0


def _ssns(text: str) -> Iterator[Hit]:
    for m in _SSN.finditer(text):
        area, group, serial = m.group(1), m.group(3), m.group(4)
        if area in ("000", "666") or area[0] == "9" or group == "00" or serial == "0000":
            continue
        yield m.start(), m.end(), "US_SSN", 0.9


def _phones(text: str) -> Iterator[Hit]:
    for m in _PHONE.finditer(text):
        s = m.group()
        digits = re.sub(r"\D", "", s.split("x")[0].split("ext")[0])
        if not 7 <= len(digits) <= 15:
            continue
        separated = bool(re.search(r"[\s().+-]", s))
        if not separated and not s.startswith("+") and len(digits) < 10:
            continue  # a bare short number is more often an id or an amount
        if _DATE.fullmatch(s):
            continue  # a bare short number is more often an id or an amount
        yield m.start(), m.end(), "PHONE_NUMBER", 0.7 if separated else 0.5


def _ips(text: str) -> Iterator[Hit]:
    for rx in (_IPV4, _IPV6):
        for m in rx.finditer(text):
            try:
                ipaddress.ip_address(m.group())
            except ValueError:
                continue
            yield m.start(), m.end(), "IP_ADDRESS", 0.95


def _urls(text: str) -> Iterator[Hit]:
    for m in _URL.finditer(text):
        yield m.start(), m.end(), "URL", 0.8


def _secrets(text: str) -> Iterator[Hit]:
    for m in _SECRETS.finditer(text):
        yield m.start(), m.end(), "API_KEY", 1.0
    for m in _ASSIGNED_SECRET.finditer(text):
        yield m.start(1), m.end(1), "API_KEY", 0.9


_TITLE = re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mme|Mlle|Herr|Frau)\b\.?(?=\s+[A-ZÀ-Ý])")
_AGE = re.compile(
    r"(?i:\b(?:aged?|age of|age:)\s+(\d{1,3})\b|\b(\d{1,3})[ -](?:years?|yrs?)[ -]old\b|\b(\d{1,3})[ -]year[ -]old\b"
    # "I just turned 47", "I'll turn 21.", "when he was 65." (a birthday or a life stage, not a count)
    r"|\bturn(?:ed|s|ing)?\s+(\d{1,3})\b(?=\s*(?:[.!?,;]|$|\s+(?:this|next|last|on|in|today|tomorrow)\b))"
    r"|\bwhen (?:i|he|she|they|you|we) (?:was|were)\s+(\d{1,3})\b(?!\s*(?:%|[:.]\d|am\b|pm\b|o'clock)))"
)
_ZIP = re.compile(
    r"(?i:\b(?:zip(?:\s*code)?|postal\s*code|post\s*code|postcode)\b\s*[:#]?\s*)"
    r"(\d{3,5}(?:[ -]\d{2,4})?(?:\s?[A-Z]{2}\b)?|[A-Z]\d[A-Z] ?\d[A-Z]\d|[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2})\b"
)
# A capitalised name ending in a legal-form or company word: "48 Factoring Inc", "Acme Holdings Ltd."
_COMPANY = re.compile(
    r"\b(?:[A-Z0-9][\w&'-]*\s+){0,3}[A-Z][\w&'-]*,?\s+(?:Inc|LLC|L\.L\.C|Ltd|Incorporated|Corp|Corporation|GmbH|"
    r"PLC|plc|Limited|AG|S\.A|N\.V|B\.V|Holdings|Group|Company|Co|LLP|Pty)\b\.?"
)
_LEADING = re.compile(r"(?:The|A|An|For|At|With|From|By|Of|In|On|I|We|My|Our)\s+")


def _titles(text: str) -> Iterator[Hit]:
    for m in _TITLE.finditer(text):
        yield m.start(), m.end(), "TITLE", 0.9


def _ages(text: str) -> Iterator[Hit]:
    for m in _AGE.finditer(text):
        g = next(i for i in range(1, 6) if m.group(i))
        if 0 < int(m.group(g)) < 130:
            yield m.start(g), m.end(g), "AGE", 0.9


def _zips(text: str) -> Iterator[Hit]:
    for m in _ZIP.finditer(text):  # only after a "ZIP"/"postal code" label: bare 4-5 digit numbers are anything
        yield m.start(1), m.end(1), "ZIP_CODE", 0.85


# US licence numbers have no checksum and a format per state (1-2 letters and 4-16 digits, mostly): only after a
# "driver's license (number) (is|:)" label.
_DRIVER_LICENSE = re.compile(
    r"(?i:\bdriver'?s?'? licen[cs]e(?:\s+(?:number|no\.?|#|id))?(?:\s+is|\s*[:#])?)\s+"
    r"([A-Za-z]{0,2}\d[A-Za-z0-9-]{4,15})\b"
)


_driver_licenses = _after_label(_DRIVER_LICENSE, "licen", "US_DRIVER_LICENSE", 0.85)


# "I work for Acme as Dairy scientist, but ...": the words after "as" name a job.
_JOB_AFTER_EMPLOYER = re.compile(
    r"(?i:\bwork(?:ed|s|ing)? (?:for|at) [^,.;\n]{1,60}? as (?:an? )?)"
    r"(?!(?i:well|usual|long|soon|much|many|part|such|expected|planned|needed|before|always|result|far|good|"
    r"if|though|of|to|it|they|we|i|you|he|she)\b)([A-Za-z][\w-]*(?: [\w-]+){0,3}?)"
    r"(?=\s*(?:[,.;!?\n]|$|\bbut\b|\band\b|\bfor\b|\buntil\b|\bsince\b))"
)


_jobs = _after_label(_JOB_AFTER_EMPLOYER, " as ", "TITLE", 0.8)


def _companies(text: str) -> Iterator[Hit]:
    for m in _COMPANY.finditer(text):
        start = m.start()
        while lead := _LEADING.match(text, start, m.end()):
            start = lead.end()
        if start < m.end() and " " in text[start : m.end()].strip():
            yield start, m.end(), "ORGANIZATION", 0.8


def _dates(text: str) -> Iterator[Hit]:
    for m in _DATE.finditer(text):
        yield m.start(), m.end(), "DATE_TIME", 0.6


RECOGNIZERS: tuple[Callable[[str], Iterator[Hit]], ...] = (
    _emails, _cards, _ibans, _ssns, _phones, _ips, _urls, _secrets, addresses, _dates, _titles, _ages, _zips,
    _companies, _driver_licenses, _labelled_cards, _jobs,
)  # fmt: skip


def regex_hits(text: str) -> list[Hit]:
    out: list[Hit] = []
    for rec in RECOGNIZERS:
        out.extend(rec(text))
    return out
