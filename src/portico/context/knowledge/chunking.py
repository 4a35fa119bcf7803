"""Structure- and token-aware chunking: sections → paragraphs → sentences → words, packed up to ``size`` tokens.

A chunk never crosses a section (heading) boundary. Consecutive chunks of one section share about ``overlap``
tokens (whole sentences where possible), so a fact cut in two is still found whole in one of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from portico.context.knowledge.loaders import LoadedDocument

_TOKEN = re.compile(r"\w+|[^\w\s]")
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|\n")


def count_tokens(text: str) -> int:
    """Words and punctuation marks: close to (a little under) a WordPiece/BPE token count, and fast."""
    return len(_TOKEN.findall(text))


@dataclass(slots=True)
class Chunk:
    text: str
    position: int  # index of the chunk in its document
    section: str
    tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChunkingOptions:
    size: int = 300  # tokens per chunk (at most)
    overlap: int = 40  # tokens shared by consecutive chunks of a section
    min_size: int = 20  # a shorter trailing piece joins the chunk before it

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError("chunk size must be at least 16 tokens")
        if not 0 <= self.overlap < self.size // 2:
            raise ValueError("chunk overlap must be at least 0 and less than half the size")


def _pieces(text: str, size: int, count: Callable[[str], int]) -> list[tuple[str, int]]:
    """Units no larger than ``size``: paragraphs, else their sentences, else runs of words."""
    out: list[tuple[str, int]] = []
    for para in _PARAGRAPH.split(text):
        para = para.strip()
        if not para:
            continue
        n = count(para)
        if n <= size:
            out.append((para, n))
            continue
        for sent in _SENTENCE.split(para):
            sent = sent.strip()
            if not sent:
                continue
            m = count(sent)
            if m <= size:
                out.append(("\x00" + sent, m))  # \x00: continues the paragraph (joined with a space)
                continue
            words = sent.split()
            step = max(1, int(len(words) * size / m))
            for i in range(0, len(words), step):
                piece = " ".join(words[i : i + step])
                out.append(("\x00" + piece, count(piece)))
    return out


def _pack(units: list[tuple[str, int]], opts: ChunkingOptions) -> list[tuple[str, int]]:
    chunks: list[tuple[str, int]] = []
    cur: list[tuple[str, int]] = []
    total = 0
    fresh = 0  # units in ``cur`` that are not overlap carried from the previous chunk
    for text, n in units:
        if cur and total + n > opts.size:
            chunks.append((_join(cur), total))
            carry: list[tuple[str, int]] = []
            kept = 0
            for t, m in reversed(cur):  # the tail of this chunk starts the next one
                if kept + m > opts.overlap:
                    break
                carry.insert(0, (t, m))
                kept += m
            if kept + n > opts.size:
                carry, kept = [], 0
            cur, total, fresh = carry, kept, 0
        cur.append((text, n))
        total += n
        fresh += 1
    if cur and fresh:
        new = cur[len(cur) - fresh :]
        new_tokens = sum(m for _, m in new)
        if chunks and new_tokens < opts.min_size and chunks[-1][1] + new_tokens <= opts.size:
            last, m = chunks.pop()  # a short tail joins the chunk before it
            chunks.append((_join([(last, m), *new]), m + new_tokens))
        else:
            chunks.append((_join(cur), total))
    return chunks


def _join(units: list[tuple[str, int]]) -> str:
    out = ""
    for t, _ in units:
        text, sep = (t[1:], " ") if t.startswith("\x00") else (t, "\n\n")
        out = f"{out}{sep}{text}" if out else text
    return out


def chunk_document(
    doc: LoadedDocument, opts: ChunkingOptions | None = None, count: Callable[[str], int] = count_tokens
) -> list[Chunk]:
    opts = opts or ChunkingOptions()
    out: list[Chunk] = []
    for section in doc.sections:
        if not section.text.strip():
            continue
        for text, n in _pack(_pieces(section.text, opts.size, count), opts):
            meta: dict[str, Any] = {"section": section.heading} if section.heading else {}
            if section.page is not None:
                meta["page"] = section.page
            out.append(Chunk(text=text, position=len(out), section=section.heading, tokens=n, metadata=meta))
    return out


def windows(text: str, size: int, overlap: int, count: Callable[[str], int] = count_tokens) -> list[str]:
    """``text`` cut into overlapping pieces of at most ``size`` tokens, at paragraph and sentence boundaries where
    possible (the same packing as chunks): what an embedding model with a short input window can read whole."""
    opts = ChunkingOptions(size=size, overlap=overlap)
    return [t for t, _ in _pack(_pieces(text, size, count), opts)]
