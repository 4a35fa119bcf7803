"""What one eval cell produced: the answer, tool calls, retrieved and cited documents, cost and latency."""

from __future__ import annotations

import contextlib
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

_MARKER = re.compile(r"\[(\d{1,3})\]")


@dataclass(slots=True)
class Outcome:
    text: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)  # {name, arguments (parsed when JSON)}
    retrieved: list[str] = field(default_factory=list)  # document ids in rank order
    citations: list[dict[str, Any]] = field(default_factory=list)  # portico.citations: {index, document_id}
    cost_usd: float | None = None
    latency_ms: float = 0.0
    tokens: int | None = None
    error: str | None = None
    request_id: str | None = None

    @property
    def cited(self) -> list[str]:
        """Document ids of the citation markers ([n]) the answer actually uses."""
        by_index = {c.get("index"): c.get("document_id") for c in self.citations}
        out: list[str] = []
        for m in _MARKER.finditer(self.text):
            doc = by_index.get(int(m.group(1)))
            if doc is not None and doc not in out:
                out.append(str(doc))
        return out

    def stored(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("cost_usd", "latency_ms", "tokens", "error"):
            d.pop(k)
        return d


def from_response(response: dict[str, Any] | None) -> Outcome:
    """Text, tool calls and citations from an OpenAI-shaped chat completion (Portico's extension included)."""
    out = Outcome()
    if not response:
        return out
    choices = response.get("choices") or []
    msg = (choices[0].get("message") or {}) if choices else {}
    content = msg.get("content")
    out.text = content if isinstance(content, str) else ("" if content is None else orjson.dumps(content).decode())
    for tc in msg.get("tool_calls") or []:
        fn = tc.get("function") or {}
        args: Any = fn.get("arguments")
        if isinstance(args, str):
            with contextlib.suppress(orjson.JSONDecodeError):
                args = orjson.loads(args)
        out.tool_calls.append({"name": fn.get("name"), "arguments": args})
    ext = response.get("portico")
    if isinstance(ext, dict) and isinstance(ext.get("citations"), list):
        out.citations = [{"index": c.get("index"), "document_id": c.get("document_id"), "score": c.get("score")}
                         for c in ext["citations"] if isinstance(c, dict)]  # fmt: skip
        # Over HTTP the ranking is not sent: the packed citations ordered by retrieval score stand in for it.
        ranked = sorted(out.citations, key=lambda c: -(c.get("score") or 0.0))
        out.retrieved = _unique(str(c["document_id"]) for c in ranked if c.get("document_id") is not None)
    usage = response.get("usage") or {}
    if usage.get("total_tokens") is not None:
        out.tokens = int(usage["total_tokens"])
    return out


def _unique(ids: Any) -> list[str]:
    out: list[str] = []
    for i in ids:
        if i not in out:
            out.append(i)
    return out
