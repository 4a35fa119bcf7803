"""A streamed answer put back together as one completion, so a stream can fill the cache like a plain call."""

from __future__ import annotations

from typing import Any


def assemble(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ``chat.completion`` the chunks spell out, or None when they do not end every choice cleanly."""
    if not chunks:
        return None
    first = chunks[0]
    choices: dict[int, dict[str, Any]] = {}
    usage = None
    for ch in chunks:
        if ch.get("usage"):
            usage = ch["usage"]
        for c in ch.get("choices") or ():
            i = c.get("index", 0)
            msg = choices.setdefault(i, {"index": i, "message": {"role": "assistant", "content": None},
                                         "finish_reason": None, "_tools": {}})  # fmt: skip
            delta = c.get("delta") or {}
            if delta.get("content"):
                msg["message"]["content"] = (msg["message"]["content"] or "") + delta["content"]
            for tc in delta.get("tool_calls") or ():
                blank = {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                t = msg["_tools"].setdefault(tc.get("index", 0), blank)
                if tc.get("id"):
                    t["id"] = tc["id"]
                fn = tc.get("function") or {}
                t["function"]["name"] += fn.get("name") or ""
                t["function"]["arguments"] += fn.get("arguments") or ""
            if c.get("finish_reason"):
                msg["finish_reason"] = c["finish_reason"]
    if not choices or any(c["finish_reason"] is None for c in choices.values()):
        return None  # cut short: never cache half an answer
    out_choices = []
    for i in sorted(choices):
        c = choices[i]
        tools = c.pop("_tools")
        if tools:
            c["message"]["tool_calls"] = [tools[k] for k in sorted(tools)]
        out_choices.append(c)
    resp: dict[str, Any] = {"id": first.get("id"), "object": "chat.completion", "created": first.get("created"),
                            "model": first.get("model"), "choices": out_choices}  # fmt: skip
    if usage is not None:
        resp["usage"] = usage
    return resp
