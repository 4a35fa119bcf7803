"""Files → documents: plain text, Markdown, HTML, PDF, DOCX, and CSV/JSONL records (one document per record).

Each loader keeps the structure chunking needs: a document is a list of sections (heading path + text), so a chunk
never straddles two headings and carries the section it came from.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUPPORTED = (".txt", ".md", ".markdown", ".html", ".htm", ".pdf", ".docx", ".csv", ".jsonl")
_TEXT_KEYS = ("text", "content", "body", "abstract")
_ID_KEYS = ("_id", "id", "doc_id")


@dataclass(slots=True)
class Section:
    heading: str  # "Intro > Install" for nested headings; "" before the first heading
    text: str
    page: int | None = None


@dataclass(slots=True)
class LoadedDocument:
    source: str
    title: str
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str | None = None  # set by record formats (CSV/JSONL) that carry their own ids

    @property
    def text(self) -> str:
        return "\n\n".join(s.text for s in self.sections if s.text)


class UnsupportedFormat(ValueError):
    pass


def load_path(path: str | Path) -> list[LoadedDocument]:
    p = Path(path)
    return load_bytes(p.read_bytes(), p.name, source=str(p))


def load_bytes(data: bytes, filename: str, source: str | None = None) -> list[LoadedDocument]:
    """Parse one file's bytes; the extension of ``filename`` picks the loader."""
    ext = Path(filename).suffix.lower()
    loader = _LOADERS.get(ext)
    if loader is None:
        raise UnsupportedFormat(f"unsupported file type '{ext or filename}' (supported: {', '.join(SUPPORTED)})")
    return loader(data, source or filename, Path(filename).stem)


def from_text(text: str, source: str, title: str = "", markdown: bool = True) -> LoadedDocument:
    """A document from a string (the API's JSON form): Markdown headings, when present, become sections."""
    sections = _markdown_sections(text) if markdown else [Section("", text.strip())]
    return LoadedDocument(source=source, title=title or _first_heading(sections) or "", sections=sections)


def _decode(data: bytes) -> str:
    for enc in ("utf-8-sig", "utf-16"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    return data.decode("latin-1")


def _load_txt(data: bytes, source: str, stem: str) -> list[LoadedDocument]:
    return [LoadedDocument(source=source, title=stem, sections=[Section("", _decode(data).strip())])]


class _Outline:
    """Sections under a heading path: a heading closes the open section and drops the deeper headings."""

    def __init__(self, joiner: str = "\n\n") -> None:
        self.sections: list[Section] = []
        self._path: list[tuple[int, str]] = []
        self._buf: list[str] = []
        self._joiner = joiner

    def heading(self, level: int, text: str) -> None:
        self._flush()
        self._path = [(lv, h) for lv, h in self._path if lv < level] + [(level, text)]

    def add(self, text: str) -> None:
        self._buf.append(text)

    def done(self) -> list[Section]:
        self._flush()
        return self.sections

    def _flush(self) -> None:
        body = self._joiner.join(self._buf).strip()
        if body:
            self.sections.append(Section(" > ".join(h for _, h in self._path), body))
        self._buf.clear()


_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_DOCX_HEADING = re.compile(r"Heading (\d)")


def _markdown_sections(text: str) -> list[Section]:
    outline = _Outline("\n")
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
        m = None if in_fence else _HEADING.match(line)
        if m:
            outline.heading(len(m.group(1)), m.group(2))
        else:
            outline.add(line)
    return outline.done() or [Section("", "")]


def _first_heading(sections: list[Section]) -> str | None:
    for s in sections:
        if s.heading:
            return s.heading.split(" > ")[0]
    return None


def _load_md(data: bytes, source: str, stem: str) -> list[LoadedDocument]:
    sections = _markdown_sections(_decode(data))
    return [LoadedDocument(source=source, title=_first_heading(sections) or stem, sections=sections)]


_BLOCKS = ("p", "li", "pre", "blockquote", "td", "th", "dd", "dt", "figcaption")
_HEADS = ("h1", "h2", "h3", "h4", "h5", "h6")


def _load_html(data: bytes, source: str, stem: str) -> list[LoadedDocument]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "nav", "footer", "header", "noscript", "template"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    body = soup.body or soup
    outline = _Outline()
    for el in body.find_all([*_HEADS, *_BLOCKS]):
        if el.name in _HEADS:
            outline.heading(int(el.name[1]), el.get_text(" ", strip=True))
        elif not el.find_parent(_BLOCKS):  # nested blocks (li inside td) are read once, through the outer one
            text = el.get_text("\n" if el.name == "pre" else " ", strip=el.name != "pre")
            if text.strip():
                outline.add(text)
    sections = outline.done()
    if not sections:  # no block structure at all: the visible text
        sections = [Section("", body.get_text("\n", strip=True))]
    return [LoadedDocument(source=source, title=title or _first_heading(sections) or stem, sections=sections)]


def _load_pdf(data: bytes, source: str, stem: str) -> list[LoadedDocument]:
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    sections = []
    for i, page in enumerate(reader.pages, start=1):
        text = (page.extract_text() or "").strip()
        if text:
            sections.append(Section(f"page {i}", text, page=i))
    title = ""
    if reader.metadata is not None and reader.metadata.title:
        title = str(reader.metadata.title)
    return [LoadedDocument(source=source, title=title or stem, sections=sections or [Section("", "")],
                           metadata={"pages": len(reader.pages)})]  # fmt: skip


def _load_docx(data: bytes, source: str, stem: str) -> list[LoadedDocument]:
    import docx

    d = docx.Document(io.BytesIO(data))
    outline = _Outline()
    for para in d.paragraphs:
        style = (para.style.name if para.style is not None else "") or ""
        text = para.text.strip()
        m = _DOCX_HEADING.match(style)
        if (m or style == "Title") and text:
            outline.heading(int(m.group(1)) if m else 0, text)
        elif text:
            outline.add(text)
    for table in d.tables:
        for row in table.rows:
            cells = [c.text.strip() for c in row.cells if c.text.strip()]
            if cells:
                outline.add(" | ".join(cells))
    sections = outline.done()
    title = d.core_properties.title or _first_heading(sections) or stem
    return [LoadedDocument(source=source, title=title, sections=sections or [Section("", "")])]


def _record(rec: dict[str, Any], source: str, n: int) -> LoadedDocument:
    doc_id = next((str(rec[k]) for k in _ID_KEYS if rec.get(k) not in (None, "")), None)
    title = str(rec.get("title") or "")
    text_key = next((k for k in _TEXT_KEYS if isinstance(rec.get(k), str)), None)
    skip = {*_ID_KEYS, "title", text_key}
    if text_key is not None:
        text = rec[text_key]
    else:  # no obvious text field: every column as "name: value"
        text = "\n".join(f"{k}: {v}" for k, v in rec.items() if k not in skip and v not in (None, ""))
    meta = {k: v for k, v in rec.items() if k not in skip and isinstance(v, str | int | float | bool)}
    meta["record"] = n
    return LoadedDocument(source=source, title=title, sections=[Section("", str(text).strip())], metadata=meta,
                          id=doc_id)  # fmt: skip


def _load_csv(data: bytes, source: str, stem: str) -> list[LoadedDocument]:
    rows = csv.DictReader(io.StringIO(_decode(data)))
    return [_record(dict(r), source, i) for i, r in enumerate(rows)]


def _load_jsonl(data: bytes, source: str, stem: str) -> list[LoadedDocument]:
    out = []
    for i, line in enumerate(_decode(data).splitlines()):
        if line.strip():
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError(f"{source}: line {i + 1} is not a JSON object")
            out.append(_record(rec, source, i))
    return out


_LOADERS: dict[str, Callable[[bytes, str, str], list[LoadedDocument]]] = {
    ".txt": _load_txt,
    ".md": _load_md,
    ".markdown": _load_md,
    ".html": _load_html,
    ".htm": _load_html,
    ".pdf": _load_pdf,
    ".docx": _load_docx,
    ".csv": _load_csv,
    ".jsonl": _load_jsonl,
}
