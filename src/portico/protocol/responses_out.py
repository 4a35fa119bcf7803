"""Chat completions → Responses API objects: the response object with its output items, and a chunk stream as the
documented semantic events (``response.created`` … ``response.completed``), each with its ``sequence_number``.

Text becomes one ``message`` item (``output_text`` part, or ``refusal``), each tool call a ``function_call`` item
that the client runs. A finish for length or the content filter makes the response ``incomplete``. The reasoning
text an OpenAI-compatible server returns beside the answer (``reasoning_content``: vLLM, llama.cpp, DeepSeek;
``reasoning``: OpenRouter) becomes a ``reasoning`` item before it, with ``reasoning_text`` content.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from portico.protocol.errors import PorticoError
from portico.protocol.responses import Reasoning, ResponsesRequest, new_id
from portico.protocol.responses_tools import end_events, item_events, start_events

Event = dict[str, Any]

_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_usage(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """Chat usage (prompt/completion tokens) in the Responses API's names."""
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "refusal":
        return {"type": "refusal", "refusal": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def message_item(item_id: str, parts: list[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": parts}


def text_item(text: str) -> dict[str, Any]:
    """A finished assistant message of plain text."""
    return message_item(new_id("msg"), [_part("text", text)])


def call_item(item_id: str, call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id, "name": name,
            "arguments": arguments}  # fmt: skip


def reasoning_of(message: dict[str, Any]) -> str:
    text = message.get("reasoning_content") or message.get("reasoning")
    return text if isinstance(text, str) else ""


def reasoning_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "reasoning_text", "text": text}] if text else []
    return {"id": item_id, "type": "reasoning", "status": status, "summary": [], "content": content}


def output_items(message: dict[str, Any]) -> list[dict[str, Any]]:
    """A chat ``message`` as output items: its reasoning, if any, its text (or refusal) as one message, then one
    item per tool call."""
    items: list[dict[str, Any]] = []
    if thought := reasoning_of(message):
        items.append(reasoning_item(new_id("rs"), thought))
    calls = message.get("tool_calls") or []
    if message.get("refusal"):
        items.append(message_item(new_id("msg"), [_part("refusal", message["refusal"])]))
    elif message.get("content") or not calls:
        items.append(message_item(new_id("msg"), [_part("text", message.get("content") or "")]))
    for call in calls:
        fn = call.get("function") or {}
        items.append(call_item(new_id("fc"), call.get("id") or new_id("call"), fn.get("name") or "",
                               fn.get("arguments") or ""))  # fmt: skip
    return items


def _echo(req: ResponsesRequest) -> dict[str, Any]:
    """The request's settings as a response object repeats them."""
    fmt = req.text.format if req.text and req.text.format else None
    text: dict[str, Any] = {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}}
    if req.text and req.text.verbosity:
        text["verbosity"] = req.text.verbosity
    reasoning = req.reasoning or Reasoning()
    return {
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "metadata": req.metadata or {},
        "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None else True,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": reasoning.effort, "summary": reasoning.summary},
        "store": req.store,
        "temperature": req.temperature if req.temperature is not None else 1.0,
        "text": text,
        "tool_choice": req.tool_choice if req.tool_choice is not None else "auto",
        "tools": req.tools or [],
        "top_p": req.top_p if req.top_p is not None else 1.0,
        "truncation": req.truncation or "disabled",
        "user": req.user,
    }


@dataclass(slots=True)
class ResponseHead:
    """What a response object says before its output: id, creation time, model, and the request it echoes."""

    req: ResponsesRequest
    id: str = field(default_factory=lambda: new_id("resp"))
    created_at: int = field(default_factory=lambda: int(time.time()))

    def object(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        *,
        model: str | None = None,
        finish_reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        incomplete = _INCOMPLETE.get(finish_reason or "")
        if incomplete and status == "completed":
            status = "incomplete"
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "background": False, "error": error,
            "incomplete_details": {"reason": incomplete} if status == "incomplete" else None,
            "model": model or self.req.model, "output": output, **_echo(self.req),
            "usage": response_usage(usage),
        }  # fmt: skip


def from_completion(head: ResponseHead, completion: dict[str, Any],
                    tool_items: list[dict[str, Any]] | None = None) -> dict[str, Any]:  # fmt: skip
    """A whole ``chat.completion`` as the response object (its first choice: a response has one answer), after
    the items of the server tools that ran for it. A run that stopped for an approval ends with its request."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    output = list(tool_items or [])
    waits = any(i["type"] == "mcp_approval_request" for i in output)
    if not (waits and not message.get("content") and not message.get("tool_calls")):
        output += output_items(message)
    return head.object("completed", output, completion.get("usage"), model=completion.get("model"),
                       finish_reason=choice.get("finish_reason"))  # fmt: skip


@dataclass(slots=True)
class _Open:
    """An output item being streamed."""

    index: int
    item: dict[str, Any]
    kind: str  # text | refusal | call | reasoning | tool (a server tool's item, already complete)
    buffer: str = ""
    done: bool = False


class ResponseEvents:
    """One chunk stream as the Responses API's events. Items open as their first delta arrives and close, in
    order, when the stream ends (the SDK keys its state by ``output_index``, so a late text delta after a tool
    call still lands in the right item)."""

    def __init__(self, head: ResponseHead, to_item: Any = None) -> None:
        self.head = head
        self.to_item = to_item  # a server tool's reported call -> its output item (None: not shown)
        self.seq = 0
        self.items: list[_Open] = []
        self.message: _Open | None = None
        self.reasoning: _Open | None = None
        self.calls: dict[int, _Open] = {}  # chat tool-call index → its item
        self.started: dict[str, _Open] = {}  # server tool call id → its item, open while the call runs
        self.usage: dict[str, Any] | None = None
        self.model: str | None = None
        self.finish_reason: str | None = None
        self.response: dict[str, Any] | None = None  # the final response object, once finish() ran
        self.failed_with: PorticoError | None = None

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return event

    def start(self) -> list[Event]:
        snapshot = self.head.object("in_progress", [])
        return [self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=snapshot)]  # fmt: skip

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        self.model = self.model or chunk.get("model")
        out: list[Event] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if thought := reasoning_of(delta):
                out += self._reasoning(thought)
            for kind in ("content", "refusal"):
                if delta.get(kind):
                    out += self._text(kind if kind == "refusal" else "text", delta[kind])
            for call in delta.get("tool_calls") or ():
                out += self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _reasoning(self, piece: str) -> list[Event]:
        out: list[Event] = []
        if self.reasoning is None or self.reasoning.done:
            self.reasoning = self._open(reasoning_item(new_id("rs"), "", "in_progress"), "reasoning", out)
        r = self.reasoning
        r.buffer += piece
        out.append(self._event("response.reasoning_text.delta", item_id=r.item["id"], output_index=r.index,
                               content_index=0, delta=piece))  # fmt: skip
        return out

    def _text(self, kind: str, piece: str) -> list[Event]:
        out: list[Event] = []
        if self.message is None:
            item = message_item(new_id("msg"), [], "in_progress")
            self.message = self._open(item, kind, out)
            out.append(self._event("response.content_part.added", item_id=item["id"], output_index=self.message.index,
                                   content_index=0, part=_part(kind, "")))  # fmt: skip
        msg = self.message
        if kind != msg.kind:  # text and refusal in one answer: keep the first kind's part
            kind = msg.kind
        if not piece:
            return out
        msg.buffer += piece
        name = "response.refusal.delta" if kind == "refusal" else "response.output_text.delta"
        extra = {} if kind == "refusal" else {"logprobs": []}
        out.append(self._event(name, item_id=msg.item["id"], output_index=msg.index, content_index=0, delta=piece,
                               **extra))  # fmt: skip
        return out

    def _call(self, delta: dict[str, Any]) -> list[Event]:
        out: list[Event] = []
        index = delta.get("index", 0)
        fn = delta.get("function") or {}
        call = self.calls.get(index)
        if call is None:
            item = call_item(new_id("fc"), delta.get("id") or new_id("call"), fn.get("name") or "", "", "in_progress")
            call = self.calls[index] = self._open(item, "call", out)
        piece = fn.get("arguments") or ""
        if piece:
            call.buffer += piece
            out.append(self._event("response.function_call_arguments.delta", item_id=call.item["id"],
                                   output_index=call.index, delta=piece))  # fmt: skip
        return out

    def tool_started(self, start: dict[str, Any]) -> list[Event]:
        """A server tool's call as it starts: its item opens (``in_progress``) and stays open until
        :meth:`tool_event` reports the call's end."""
        event = {**start, "status": "in_progress", "content": None, "data": None, "approval_id": None}
        item = self.to_item(event) if self.to_item is not None else None
        if item is None or not start.get("call_id"):
            return []
        out = self._close_message()
        o = self.started[start["call_id"]] = self._open(item, "tool", out)
        where = {"item_id": item["id"], "output_index": o.index}
        out += [self._event(name, **where, **fields) for name, fields in start_events(item)]
        return out

    def tool_event(self, event: dict[str, Any]) -> list[Event]:
        """A server tool's call as it ended: the item it opened with is closed, or (not announced) the whole item
        is streamed now; text after it opens a new message item, as it comes after the call."""
        item = self.to_item(event) if self.to_item is not None else None
        o = self.started.pop(event.get("call_id") or "", None)
        if o is None:
            return self.tool_item(item) if item is not None else []
        item = {**(item or o.item), "id": o.item["id"]}  # the id it was announced with
        where = {"item_id": item["id"], "output_index": o.index}
        out = [self._event(name, **where, **fields) for name, fields in end_events(item)]
        o.item, o.done = item, True
        out.append(self._event("response.output_item.done", output_index=o.index, item=item))
        return out

    def _close_message(self) -> list[Event]:
        if self.message is None:
            return []
        out = self._close(self.message)
        self.message = None
        return out

    def tool_item(self, item: dict[str, Any]) -> list[Event]:
        out = self._close_message()
        o = self._open({**item, "status": "in_progress"} if "status" in item else item, "tool", out)
        where = {"item_id": item["id"], "output_index": o.index}
        out += [self._event(name, **where, **fields) for name, fields in item_events(item)]
        o.item, o.done = item, True
        out.append(self._event("response.output_item.done", output_index=o.index, item=item))
        return out

    def _open(self, item: dict[str, Any], kind: str, out: list[Event]) -> _Open:
        if kind != "reasoning" and self.reasoning is not None:  # the answer starts: the thinking is over
            out += self._close(self.reasoning)
        opened = _Open(len(self.items), item, kind)
        self.items.append(opened)
        out.append(self._event("response.output_item.added", output_index=opened.index, item=dict(item)))
        return opened

    def _close(self, o: _Open) -> list[Event]:
        if o.done:
            return []
        o.done = True
        item_id = o.item["id"]
        if o.kind == "tool":  # a server tool's call that never reported its end (the stream ended first)
            o.item = {**o.item, "status": "failed"}
            return [self._event("response.output_item.done", output_index=o.index, item=o.item)]
        if o.kind == "reasoning":
            o.item = reasoning_item(item_id, o.buffer)
            where = {"item_id": item_id, "output_index": o.index, "content_index": 0}
            return [self._event("response.reasoning_text.done", **where, text=o.buffer),
                    self._event("response.output_item.done", output_index=o.index, item=o.item)]  # fmt: skip
        if o.kind == "call":
            done = {**o.item, "status": "completed", "arguments": o.buffer}
            args = self._event("response.function_call_arguments.done", item_id=item_id, output_index=o.index,
                               name=o.item["name"], arguments=o.buffer)  # fmt: skip
            o.item = done
            return [args, self._event("response.output_item.done", output_index=o.index, item=done)]
        part = _part(o.kind, o.buffer)
        where = {"item_id": item_id, "output_index": o.index, "content_index": 0}
        if o.kind == "refusal":
            text_done = self._event("response.refusal.done", **where, refusal=o.buffer)
        else:
            text_done = self._event("response.output_text.done", **where, text=o.buffer, logprobs=[])
        o.item = {**o.item, "status": "completed", "content": [part]}
        return [text_done, self._event("response.content_part.done", **where, part=part),
                self._event("response.output_item.done", output_index=o.index, item=o.item)]  # fmt: skip

    def finish(self) -> list[Event]:
        """Close every item; the final response object is then in ``self.response``. The caller stores it before
        sending :meth:`completed` so a client that follows up at once finds it."""
        out: list[Event] = []
        waits = any(o.item["type"] == "mcp_approval_request" for o in self.items)
        last = self.items[-1].kind if self.items else None
        if last is None or (self.message is None and not self.calls and not waits and last in ("tool", "reasoning")):
            out += self._text("text", "")  # an empty answer is still one (empty) message
        for o in self.items:
            out += self._close(o)
        self.response = self.head.object("completed", [o.item for o in self.items], self.usage, model=self.model,
                                         finish_reason=self.finish_reason)  # fmt: skip
        return out

    def completed(self) -> list[Event]:
        assert self.response is not None
        kind = "response.incomplete" if self.response["status"] == "incomplete" else "response.completed"
        return [self._event(kind, response=self.response)]

    def failed(self, e: PorticoError) -> list[Event]:
        """The stream broke after the first byte: the response ends ``failed`` with the error in it."""
        self.failed_with = e
        error = {"code": e.code or e.type, "message": e.message}
        self.response = self.head.object("failed", [o.item for o in self.items], self.usage, model=self.model,
                                         error=error)  # fmt: skip
        return [self._event("response.failed", response=self.response)]
