"""Where eval cells run: in this process through the runtime's real pipelines, or against a running server.

In-process runs build each variant's pipeline from the config (an application, a model, or an application with
its prompt or steps overridden) exactly as the server does, and read retrieval, cost and tokens from the request
context. A server is reached over its OpenAI-compatible API; the master key (when given) adds each request's cost
from its trace. Neither writes usage or traces for eval traffic in-process; a server records its own as usual.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from pydantic import ValidationError

from portico.evaluation.datasets import Item
from portico.evaluation.outcome import Outcome, from_response
from portico.evaluation.spec import VariantSpec
from portico.pipeline.context import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.errors import PorticoError

if TYPE_CHECKING:
    from portico.pipeline import Pipeline
    from portico.runtime import Runtime


def request_body(model: str, item: Item, params: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": item.messages}
    if item.tools:
        body["tools"] = item.tools
    return {**body, **params, "stream": False}


class TargetError(ValueError):
    pass


class InProcessTarget:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._pipelines: dict[str, tuple[Pipeline, str | None]] = {}

    def prepare(self, v: VariantSpec) -> None:
        """Build the variant's pipeline now, so a bad override fails before any cell runs."""
        from portico.config.schema import ApplicationConfig

        cfg = self.rt.cfg
        app = next((a for a in cfg.applications if a.name == v.model), None)
        if not v.overrides_pipeline:
            try:
                self._pipelines[v.name] = self.rt.pipeline_for(v.model)
            except PorticoError as e:
                raise TargetError(f"variant '{v.name}': {e.message}") from None
            return
        if app is None and cfg.model(v.model) is None:
            raise TargetError(f"variant '{v.name}': unknown model or application '{v.model}'")
        steps = [s.model_dump() for s in app.steps] if app is not None else []
        if v.steps is not None:
            steps = list(v.steps)
        if v.system_prompt is not None:
            prompts = [s for s in steps if s.get("use") == "system_prompt"]
            for s in prompts:
                s["text"] = v.system_prompt
            if not prompts:
                steps.insert(0, {"use": "system_prompt", "text": v.system_prompt})
        try:
            spec = ApplicationConfig(name=app.name if app else v.model, model=app.model if app else v.model,
                                     version=v.version or (app.version if app else "1"), steps=steps)  # fmt: skip
            self._pipelines[v.name] = (self.rt._build(spec), spec.name)
        except (ValidationError, ValueError) as e:
            raise TargetError(f"variant '{v.name}': {e}") from None

    async def _call(self, pipeline: Pipeline, application: str | None, body: dict[str, Any]) -> tuple[Outcome, Any]:
        out = Outcome(request_id="eval-" + uuid.uuid4().hex[:16])
        t0 = time.perf_counter()
        try:
            req = ChatCompletionRequest.model_validate(body)
        except ValidationError as e:
            out.error = f"invalid request: {e.errors(include_url=False)[0]['msg']}"
            return out, None
        ctx = RequestContext(request=req, request_id=out.request_id or "", model=req.model, application=application,
                             caller={"key": "eval"})  # fmt: skip
        try:
            await pipeline.run(ctx)
        except PorticoError as e:
            out.error = f"{e.status} {e.message}"
            out.latency_ms = (time.perf_counter() - t0) * 1000
            return out, ctx
        got = from_response(ctx.response)
        got.request_id, got.latency_ms = out.request_id, (time.perf_counter() - t0) * 1000
        if ctx.documents is not None:  # the ranking itself, not just what was packed
            got.retrieved = list(dict.fromkeys(str(d.get("document_id", d.get("id"))) for d in ctx.documents))
        got.cost_usd = self.rt.prices.request_cost(ctx)
        if ctx.usage:
            got.tokens = int(ctx.usage.get("total_tokens") or 0) or None
        return got, ctx

    async def run(self, v: VariantSpec, item: Item) -> Outcome:
        pipeline, application = self._pipelines[v.name]
        return (await self._call(pipeline, application, request_body(application or v.model, item, v.params)))[0]

    async def judge(self, model: str, messages: list[dict[str, Any]], max_tokens: int) -> str:
        try:
            pipeline, application = self.rt.pipeline_for(model)
        except PorticoError as e:
            raise TargetError(f"judge '{model}': {e.message}") from None
        out, _ = await self._call(pipeline, application, {"model": model, "messages": messages, "temperature": 0,
                                                             "max_tokens": max_tokens})  # fmt: skip
        if out.error:
            raise TargetError(f"judge '{model}' failed: {out.error}")
        return out.text

    @property
    def embed(self) -> Any:
        return self.rt.embedder.embed if self.rt.embedder.model else None

    async def close(self) -> None:
        return None


class HttpTarget:
    def __init__(self, url: str, api_key: str | None, master_key: str | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.master_key = master_key
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout)
        self._embed_model: str | None = None

    def prepare(self, v: VariantSpec) -> None:
        if v.overrides_pipeline:
            raise TargetError(f"variant '{v.name}': prompt or step overrides need an in-process run (--config, "
                              "no --url): a server runs its applications as configured")  # fmt: skip

    async def _post(self, body: dict[str, Any]) -> Outcome:
        t0 = time.perf_counter()
        try:
            r = await self.client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError as e:
            return Outcome(error=f"connection: {e!r}", latency_ms=(time.perf_counter() - t0) * 1000)
        latency = (time.perf_counter() - t0) * 1000
        rid = r.headers.get("x-request-id")
        if r.status_code != 200:
            try:
                msg = r.json()["error"]["message"]
            except Exception:
                msg = r.text[:300]
            return Outcome(error=f"{r.status_code} {msg}", latency_ms=latency, request_id=rid)
        out = from_response(r.json())
        out.latency_ms, out.request_id = latency, rid
        if self.master_key and rid:
            t = await self.client.get(f"/admin/requests/{rid}", headers={"authorization": f"Bearer {self.master_key}"})
            if t.status_code == 200:
                out.cost_usd = t.json().get("cost_usd")
        return out

    async def run(self, v: VariantSpec, item: Item) -> Outcome:
        return await self._post(request_body(v.model, item, v.params))

    async def judge(self, model: str, messages: list[dict[str, Any]], max_tokens: int) -> str:
        out = await self._post({"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens})
        if out.error:
            raise TargetError(f"judge '{model}' failed: {out.error}")
        return out.text

    async def _embed(self, texts: list[str]) -> np.ndarray:
        if self._embed_model is None:
            models = (await self.client.get("/v1/models")).json().get("data", [])
            found = next((m["id"] for m in models if m.get("portico_type") == "embedding"), None)
            if found is None:
                raise TargetError("embedding_similarity: the server has no embedding model")
            self._embed_model = found
        r = await self.client.post("/v1/embeddings", json={"model": self._embed_model, "input": texts})
        r.raise_for_status()
        arr = np.asarray([d["embedding"] for d in r.json()["data"]], dtype=np.float32)
        return arr / np.maximum(np.linalg.norm(arr, axis=1, keepdims=True), 1e-12)

    @property
    def embed(self) -> Any:
        return self._embed

    async def close(self) -> None:
        await self.client.aclose()
