"""In-process chat through llama.cpp (llama-cpp-python) for any GGUF file.

Unlike the HTTP providers this one *is* the engine, so it implements the backend interface itself. A llama.cpp
context is not thread-safe: one worker thread owns it and requests queue for it, while the event loop stays
free for everything else. Streams hand tokens to the loop with ``call_soon_threadsafe``; a client that goes
away sets a flag the worker checks after every token, which closes llama's generator and frees the model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from portico.config.schema import LocalDeployment
from portico.gateway.providers.local.paths import default_gguf
from portico.protocol.chat import ChatCompletionRequest, Message, TextPart, chunk_dict, usage_dict
from portico.protocol.errors import InvalidRequest, ServiceUnavailable, UpstreamError

log = logging.getLogger("portico.local")

_DONE = object()


class LlamaChatBackend:
    kind = "chat"

    def __init__(self, dep: LocalDeployment) -> None:
        self.dep = dep
        self.path = Path(dep.path) if dep.path else default_gguf()
        self.model_id = dep.model or self.path.stem
        self.label = dep.name or f"local/{self.model_id}"
        self._llm: Any = None
        self._formatter: Any = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="portico-llama")
        self.error: str | None = None

    @property
    def ready(self) -> bool:
        return self._llm is not None

    async def start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._load)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _load(self) -> None:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if not self.path.is_file():
            self.error = f"GGUF file not found: {self.path}"
            raise FileNotFoundError(self.error)
        t0 = time.perf_counter()
        llm = Llama(
            model_path=str(self.path),
            n_ctx=self.dep.n_ctx,
            n_threads=self.dep.n_threads or os.cpu_count() or 1,
            chat_format=self.dep.chat_format,
            verbose=False,
        )
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            # Used only to count prompt tokens of streams (llama.cpp reports usage only when not streaming).
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=llm._model.token_get_text(llm.token_eos()),
                bos_token=llm._model.token_get_text(llm.token_bos()),
            )
        self._llm = llm
        log.info("local model loaded", extra={"model": self.label, "seconds": round(time.perf_counter() - t0, 2)})

    # ---- request mapping -------------------------------------------------------------------------------

    def _kwargs(self, req: ChatCompletionRequest) -> dict[str, Any]:
        if req.logprobs:
            raise InvalidRequest("logprobs are not available from the local llama.cpp deployment", param="logprobs")
        kw: dict[str, Any] = {
            "messages": [_plain_message(m, i) for i, m in enumerate(req.messages)],
            "model": self.model_id,
        }
        if req.temperature is not None:
            kw["temperature"] = req.temperature
        if req.top_p is not None:
            kw["top_p"] = req.top_p
        if req.output_limit is not None:
            kw["max_tokens"] = req.output_limit
        if req.stop is not None:
            kw["stop"] = req.stop_list
        if req.seed is not None:
            kw["seed"] = req.seed
        if req.presence_penalty is not None:
            kw["presence_penalty"] = req.presence_penalty
        if req.frequency_penalty is not None:
            kw["frequency_penalty"] = req.frequency_penalty
        if req.logit_bias:
            try:
                kw["logit_bias"] = {int(k): v for k, v in req.logit_bias.items()}
            except ValueError:
                raise InvalidRequest("logit_bias keys must be token ids", param="logit_bias") from None
        rf = req.response_format
        if rf is not None and rf.type == "json_object":
            kw["response_format"] = {"type": "json_object"}
        elif rf is not None and rf.type == "json_schema" and rf.json_schema is not None:
            kw["response_format"] = {"type": "json_object", "schema": rf.json_schema.schema_ or {}}
        if req.tools and req.tool_choice != "none":
            kw["tools"] = [t.model_dump(exclude_none=True) for t in req.tools]
            kw["tool_choice"] = req.tool_choice or "auto"
            if kw["tool_choice"] == "required":
                # llama.cpp's ChatML handler knows auto, none and a named tool (it asserts on anything else): with
                # one tool "required" is that tool named; with several there is no grammar that forces a choice.
                if len(req.tools) != 1:
                    raise InvalidRequest("the local model takes tool_choice 'required' with one tool only; name the "
                                         "tool ({'type': 'function', 'function': {'name': …}}) or use 'auto'",
                                         param="tool_choice")  # fmt: skip
                kw["tool_choice"] = {"type": "function", "function": {"name": req.tools[0].function.name}}
        return kw

    def _create(self, kw: dict[str, Any], stream: bool) -> Any:
        if self._llm is None:
            raise ServiceUnavailable(f"{self.label} is still loading", headers={"retry-after": "2"})
        if "tools" in kw:
            # The GGUF's own template knows no tools; llama.cpp's ChatML function-calling handler constrains the
            # output with a grammar, which works for ChatML models such as SmolLM2.
            from llama_cpp.llama_chat_format import chatml_function_calling

            return chatml_function_calling(llama=self._llm, stream=stream, **kw)
        return self._llm.create_chat_completion(stream=stream, **kw)

    # ---- non-streaming ---------------------------------------------------------------------------------

    async def chat(self, req: ChatCompletionRequest) -> dict[str, Any]:
        kw = self._kwargs(req)
        loop = asyncio.get_running_loop()
        results = [await loop.run_in_executor(self._pool, self._create, kw, False) for _ in range(req.n or 1)]
        out = results[0]
        if len(results) > 1:
            prompt = out["usage"]["prompt_tokens"]
            completion = sum(r["usage"]["completion_tokens"] for r in results)
            out["choices"] = [dict(r["choices"][0], index=i) for i, r in enumerate(results)]
            out["usage"] = usage_dict(prompt, completion)
        for c in out["choices"]:
            c.setdefault("logprobs", None)
        return out

    # ---- streaming -------------------------------------------------------------------------------------

    async def stream(self, req: ChatCompletionRequest) -> AsyncIterator[dict[str, Any]]:
        kw = self._kwargs(req)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        cancelled = threading.Event()
        stats = {"completion": 0}
        n = req.n or 1

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def produce() -> None:
            try:
                for index in range(n):
                    gen: Iterator[dict[str, Any]] = self._create(kw, True)
                    try:
                        for chunk in gen:
                            if cancelled.is_set():
                                return
                            if index:
                                for c in chunk["choices"]:
                                    c["index"] = index
                            if _has_text(chunk):
                                stats["completion"] += 1
                            put(chunk)
                    finally:
                        gen.close()  # stops llama.cpp's generation loop right here
            except BaseException as e:  # hand every failure to the loop
                put(e)
            finally:
                put(_DONE)

        future = loop.run_in_executor(self._pool, produce)
        first: dict[str, Any] | None = None
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, InvalidRequest | ServiceUnavailable):
                        raise item
                    raise UpstreamError(f"{self.label}: local generation failed: {item}", status=502) from item
                if first is None:
                    first = item
                item["choices"] = [dict(c, logprobs=c.get("logprobs")) for c in item["choices"]]
                yield item
            if first is not None:
                prompt_tokens = self._count_prompt(kw)
                yield chunk_dict(
                    id=first["id"],
                    model=first["model"],
                    created=first["created"],
                    choices=[],
                    usage=usage_dict(prompt_tokens, stats["completion"]),
                )
        finally:
            cancelled.set()
            # Let the worker notice and finish; do not leave the executor future unobserved.
            if not future.done():
                future.add_done_callback(lambda f: f.exception())

    def count_tokens(self, messages: list[dict[str, Any]]) -> int | None:
        """Prompt tokens of ``messages`` by this model's template and tokenizer (context routing); None until loaded."""
        return None if self._llm is None else self._count_prompt({"messages": messages})

    def _count_prompt(self, kw: dict[str, Any]) -> int:
        text = ""
        if self._formatter is not None and "tools" not in kw:
            try:
                text = self._formatter(messages=kw["messages"]).prompt
            except Exception:  # a template error must not fail an already-answered stream
                text = ""
        if not text:
            text = "\n".join(str(m.get("content") or "") for m in kw["messages"])
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))


def _plain_message(msg: Message, i: int) -> dict[str, Any]:
    """The GGUF chat templates take string content: text parts are joined, other parts cannot be sent."""
    out = msg.model_dump(exclude_none=True)
    if isinstance(msg.content, list):
        for j, part in enumerate(msg.content):
            if not isinstance(part, TextPart):
                raise InvalidRequest(f"the local model takes text only, not '{part.type}' parts",
                                     param=f"messages[{i}].content[{j}]")  # fmt: skip
        out["content"] = msg.text()
    return out


def _has_text(chunk: dict[str, Any]) -> bool:
    for c in chunk.get("choices", ()):
        d = c.get("delta") or {}
        if d.get("content") or d.get("tool_calls"):
            return True
    return False
