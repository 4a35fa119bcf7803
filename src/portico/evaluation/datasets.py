"""Eval datasets: JSONL files of items, and items built from stored traces with their feedback.

One item per line::

    {"id": "q1", "messages": [{"role": "user", "content": "…"}], "expected": "Paris",
     "gold_ids": ["doc-7"], "tags": ["geo"], "expected_tools": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}

``input`` (a string) is shorthand for one user message. The content hash (of the normalised items) versions a
dataset in the database: the same items under the same name are the same version.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from sqlalchemy import select

from portico.storage.db import Database, traces
from portico.storage.feedback import feedback_by_request


class ExpectedTool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    arguments: dict[str, Any] | None = None  # None: any arguments


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, min_length=1, max_length=200)
    messages: list[dict[str, Any]] | None = None
    input: str | None = None
    expected: Any = None
    gold_ids: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    expected_tools: list[ExpectedTool] | None = None
    tools: list[dict[str, Any]] | None = None  # offered to the model (OpenAI tool definitions)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _normalise(self) -> Item:
        if (self.messages is None) == (self.input is None):
            raise ValueError("give either messages or input")
        if self.input is not None:
            self.messages = [{"role": "user", "content": self.input}]
            self.input = None
        if not self.messages:
            raise ValueError("messages: at least one message")
        if self.id is None:  # stable across runs: derived from the content
            self.id = hashlib.sha256(orjson.dumps(self.messages, option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
        return self

    def plain(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude={"input"})


class DatasetError(ValueError):
    pass


def parse_items(lines: list[str], where: str) -> list[Item]:
    items: list[Item] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = Item.model_validate(orjson.loads(line))
        except orjson.JSONDecodeError as e:
            raise DatasetError(f"{where}:{n}: not JSON ({e})") from None
        except ValidationError as e:
            first = e.errors(include_url=False)[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise DatasetError(f"{where}:{n}: {loc + ': ' if loc else ''}{first['msg']}") from None
        assert item.id is not None
        if item.id in seen:
            raise DatasetError(f"{where}:{n}: item id '{item.id}' appears twice")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise DatasetError(f"{where}: no items")
    return items


def load_jsonl(path: str | Path) -> list[Item]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise DatasetError(f"{p}: {e.strerror}") from None
    return parse_items(text.splitlines(), str(p))


def content_hash(items: list[Item]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(orjson.dumps(it.plain(), option=orjson.OPT_SORT_KEYS))
        h.update(b"\n")
    return h.hexdigest()


def dump_jsonl(items: list[Item]) -> bytes:
    return b"".join(orjson.dumps(it.plain()) + b"\n" for it in items)


# ---- from traces ----
def _answer_text(output: Any) -> str | None:
    if isinstance(output, list) and output and isinstance(output[0], dict):
        content = output[0].get("content")
        return content if isinstance(content, str) else None
    return None


def item_from_trace(trace: dict[str, Any], feedback: list[dict[str, Any]]) -> Item | None:
    """A trace → an item: the prompt the client sent (an application's own system messages dropped, since the
    application adds them again), and as ``expected`` a demonstration if someone corrected the answer, else the
    answer itself when boolean feedback said it was good."""
    messages = trace.get("input")
    if not isinstance(messages, list) or not messages:
        return None
    if trace.get("application"):
        messages = [m for m in messages if m.get("role") not in ("system", "developer")]
    if not messages:
        return None
    expected = None
    tags = [t for t in (trace.get("application") and f"app:{trace['application']}",) if t]
    for f in feedback:
        if f["kind"] == "demonstration":
            expected = f["value_text"]
        elif f["kind"] == "category":
            tags.append(f"{f['metric']}:{f['value_text']}")
        elif f["kind"] == "boolean":
            tags.append(f"{f['metric']}:{'true' if f['value_num'] == 1.0 else 'false'}")
    if expected is None and any(f["kind"] == "boolean" and f["value_num"] == 1.0 for f in feedback):
        expected = _answer_text(trace.get("output"))
    summary = [{"metric": f["metric"], "kind": f["kind"], "value": f["value"] if f["value"] is not None
                else (f["value_text"] if f["value_text"] is not None else f["value_num"])}
               for f in feedback if f["kind"] != "pairwise"]  # fmt: skip
    return Item(id=trace["request_id"][:200], messages=messages, expected=expected, tags=sorted(set(tags)),
                metadata={"request_id": trace["request_id"], "model": trace.get("model"),
                          "answer": _answer_text(trace.get("output")), "feedback": summary})  # fmt: skip


async def items_from_traces(
    db: Database, *, application: str | None, since: float | None, until: float | None = None,
    with_feedback: bool = False, limit: int = 1000,
) -> list[Item]:  # fmt: skip
    """Successful chat traces with stored content, oldest first; ``with_feedback`` keeps only judged ones."""
    stmt = select(traces.c.request_id, traces.c.application, traces.c.model, traces.c.input, traces.c.output).where(
        (traces.c.endpoint == "chat") & (traces.c.status == 200)
    )
    if application:
        stmt = stmt.where(traces.c.application == application)
    if since is not None:
        stmt = stmt.where(traces.c.ts >= since)
    if until is not None:
        stmt = stmt.where(traces.c.ts < until)
    out: list[Item] = []
    batch = 2000
    offset = 0
    while len(out) < limit:
        async with db.engine.connect() as conn:
            rows = [dict(r) for r in (await conn.execute(
                stmt.order_by(traces.c.ts).offset(offset).limit(batch))).mappings().all()]  # fmt: skip
        if not rows:
            break
        offset += len(rows)
        fb = await feedback_by_request(db, [r["request_id"] for r in rows])
        for r in rows:
            if with_feedback and not fb.get(r["request_id"]):
                continue
            item = item_from_trace(r, fb.get(r["request_id"], []))
            if item is not None:
                out.append(item)
                if len(out) >= limit:
                    break
    return out


async def build_from_traces(
    db: Database, *, application: str | None, since: float | None, until: float | None, with_feedback: bool,
    limit: int, name: str | None,
) -> dict[str, Any]:  # fmt: skip
    """Items from traces, registered as a dataset version when ``name`` is given (the admin API and the CLI)."""
    from portico.storage.evals import register_dataset

    items = await items_from_traces(db, application=application, since=since, until=until,
                                    with_feedback=with_feedback, limit=limit)  # fmt: skip
    out: dict[str, Any] = {"object": "dataset", "name": name, "data": [i.plain() for i in items]}
    if name and items:
        digest = content_hash(items)
        source = f"traces application={application} since={since} with_feedback={with_feedback}"
        out.update(version=await register_dataset(db, name, digest, out["data"], source), hash=digest)
    return out
