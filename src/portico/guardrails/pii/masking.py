"""Reversible masking: stable placeholders per request (``[EMAIL_ADDRESS_1]``) and their unmasking, in plain
answers and in streams where a placeholder may arrive split across chunks."""

from __future__ import annotations

import re
from collections.abc import Iterable

from portico.guardrails.pii.detector import Span

PLACEHOLDER = re.compile(r"\[([A-Z][A-Z_]*_\d+)\]")
_PARTIAL = re.compile(r"\[[A-Z_0-9]*$")  # an opening bracket whose placeholder may continue in the next chunk
MAX_PLACEHOLDER = 40


class Masker:
    """One request's placeholder dictionary: the same value gets the same placeholder in every message."""

    def __init__(self) -> None:
        self.by_value: dict[tuple[str, str], str] = {}
        self.mapping: dict[str, str] = {}  # placeholder (without brackets) → original
        self.counts: dict[str, int] = {}

    def placeholder(self, typ: str, value: str) -> str:
        key = (typ, value)
        name = self.by_value.get(key)
        if name is None:
            n = self.counts.get(typ, 0) + 1
            self.counts[typ] = n
            name = f"{typ}_{n}"
            self.by_value[key] = name
            self.mapping[name] = value
        return name

    def mask(self, text: str, spans: Iterable[Span]) -> str:
        out: list[str] = []
        pos = 0
        for s in sorted(spans, key=lambda s: s.start):
            out.append(text[pos : s.start])
            out.append(f"[{self.placeholder(s.type, s.text)}]")
            pos = s.end
        out.append(text[pos:])
        return "".join(out)


def unmask(text: str, mapping: dict[str, str]) -> str:
    if not mapping or "[" not in text:
        return text
    return PLACEHOLDER.sub(lambda m: mapping.get(m.group(1), m.group(0)), text)


class StreamUnmasker:
    """Unmask a stream of text pieces: a tail that may be the start of a placeholder (``[EMA``) is held back
    until the next piece completes it (or shows it is not one), so the client never sees half a placeholder."""

    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping
        self.held = ""

    def feed(self, piece: str) -> str:
        text = self.held + piece
        self.held = ""
        i = text.rfind("[")
        if i >= 0 and len(text) - i <= MAX_PLACEHOLDER and _PARTIAL.match(text, i):
            self.held = text[i:]
            text = text[:i]
        return unmask(text, self.mapping)

    def flush(self) -> str:
        text, self.held = self.held, ""
        return unmask(text, self.mapping)
