"""The ``web_search`` tool kind: a web search API (SearxNG, Brave, Tavily) behind one tool, results normalised to
title/url/snippet, optional fetch-and-extract of the top pages, per-tool domain allow/deny lists.

```yaml
tools:
  - name: web_search
    kind: web_search
    provider: brave            # searxng | brave | tavily
    api_key: ${BRAVE_API_KEY}
    max_results: 5
    fetch: 2                   # open the top 2 pages and give the model their main text
    deny_domains: [pinterest.com]
```
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from portico.actions.kinds.web_search.pages import DomainRules, PageFetcher, page_connector
from portico.actions.kinds.web_search.providers import PROVIDERS, Hit, Provider
from portico.actions.tool import SingleTool, Tool, ToolContext, ToolResult

log = logging.getLogger("portico.actions.web_search")

DEFAULT_DESCRIPTION = (
    "Search the web. Returns the top results with title, URL and a snippet (and the main text of the first "
    "pages when enabled). Use it for current events or facts you do not know; cite the URLs you use."
)


class WebSearchOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    provider: Literal["searxng", "brave", "tavily"]
    base_url: str | None = None  # the provider's API root; required for searxng (your instance)
    api_key: SecretStr | None = None  # brave and tavily; never logged
    max_results: int = Field(default=5, ge=1, le=20)  # per call; the model may ask for fewer
    fetch: int = Field(default=0, ge=0, le=10)  # open the top N allowed pages and extract their main text
    fetch_timeout: float = Field(default=5.0, gt=0, le=60)  # seconds per page, redirects included
    fetch_max_bytes: int = Field(default=2_000_000, ge=1024, le=50_000_000)
    fetch_max_chars: int = Field(default=4000, ge=100, le=100_000)  # extracted text kept per page
    fetch_private_hosts: bool = False  # let fetched pages be on private/loopback addresses (intranet search)
    allow_domains: list[str] = Field(default_factory=list)
    deny_domains: list[str] = Field(default_factory=list)
    cost_per_call: float = Field(default=0.0, ge=0)  # USD per search request, for the run's cost

    @model_validator(mode="after")
    def _check(self) -> WebSearchOptions:
        if self.provider == "searxng" and not self.base_url:
            raise ValueError("provider searxng needs base_url (the instance's root URL)")
        if PROVIDERS[self.provider].needs_key and self.api_key is None:
            raise ValueError(f"provider {self.provider} needs api_key (write api_key: ${{ENV_VAR}})")
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return self


class WebSearchTool(Tool):
    kind = "web_search"

    def __init__(self, name: str, description: str, options: WebSearchOptions, *, timeout: float) -> None:
        parameters = {
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 400, "description": "What to search for"},
                "max_results": {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": options.max_results,
                    "description": f"How many results (default and at most {options.max_results})",
                },
            },
            "required": ["query"],
            "additionalProperties": False,
        }
        super().__init__(name, description or DEFAULT_DESCRIPTION, parameters, write=False, timeout=timeout)
        self.options = options
        key = options.api_key.get_secret_value() if options.api_key else None
        self.provider: Provider = PROVIDERS[options.provider](options.base_url, key)
        self.rules = DomainRules(options.allow_domains, options.deny_domains)
        self._filtering = bool(self.rules.allow or self.rules.deny)
        self._api: aiohttp.ClientSession | None = None
        self._fetcher: PageFetcher | None = None

    def _clients(self) -> tuple[aiohttp.ClientSession, PageFetcher | None]:
        """Made on the first call (an aiohttp session belongs to a running loop), then kept for the tool's life."""
        if self._api is None:
            self._api = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout), raise_for_status=False)
            if self.options.fetch:
                pages = aiohttp.ClientSession(
                    connector=page_connector(self.options.fetch_private_hosts),
                    headers={"User-Agent": "Portico web_search (+fetch)"},
                )
                self._fetcher = PageFetcher(
                    pages,
                    self.rules,
                    timeout=self.options.fetch_timeout,
                    max_bytes=self.options.fetch_max_bytes,
                    max_chars=self.options.fetch_max_chars,
                    allow_private=self.options.fetch_private_hosts,
                )
        return self._api, self._fetcher

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        query: str = arguments["query"]
        n = min(arguments.get("max_results", self.options.max_results), self.options.max_results)
        api, fetcher = self._clients()
        # Ask for more when the domain lists may drop some, so the model still gets n results.
        req = self.provider.request(query, n * 2 if self._filtering else n, self.rules.allow, self.rules.deny)
        async with api.request(req.method, req.url, params=req.params, json=req.json, headers=req.headers) as resp:
            raw = await resp.read()
            if resp.status >= 400:
                detail = raw[:300].decode("utf-8", errors="replace").strip()
                raise RuntimeError(f"{self.provider.name} answered HTTP {resp.status}: {detail}")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise RuntimeError(f"{self.provider.name} did not answer JSON (is format=json enabled?)") from None
        hits, extra = self.provider.parse(body)
        hits = [h for h in hits if self.rules.permits(h.url)][:n]
        failures: dict[str, str] = {}
        if fetcher is not None and hits:
            failures = await self._fetch(fetcher, hits[: self.options.fetch])
        data: dict[str, Any] = {"query": query, "results": [h.as_dict() for h in hits], **extra}
        if failures:
            data["fetch_errors"] = failures
        citations = [
            {"id": f"{self.name}-{i}", "title": h.title, "url": h.url, "source": self.name}
            for i, h in enumerate(hits, 1)
        ]
        return ToolResult(_render(query, hits, extra), data=data, citations=citations, cost=self.options.cost_per_call)

    def public(self) -> dict[str, Any]:
        o = self.options
        return {"provider": o.provider, "base_url": self.provider.base_url, "max_results": o.max_results,
                "fetch": o.fetch, "allow_domains": o.allow_domains, "deny_domains": o.deny_domains}  # fmt: skip

    async def _fetch(self, fetcher: PageFetcher, hits: list[Hit]) -> dict[str, str]:
        results = await asyncio.gather(*(fetcher.fetch(h.url) for h in hits), return_exceptions=True)
        failures: dict[str, str] = {}
        for h, r in zip(hits, results, strict=True):
            if isinstance(r, str):
                h.text = r
            elif isinstance(r, asyncio.CancelledError):
                raise r
            else:  # one page that fails leaves its snippet; the search still answers
                failures[h.url] = _reason(r)
        return failures

    async def close(self) -> None:
        for session in (self._api, self._fetcher.session if self._fetcher else None):
            if session is not None:
                await session.close()
        self._api = self._fetcher = None


def _reason(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return (str(e) or type(e).__name__)[:200]


def _render(query: str, hits: list[Hit], extra: dict[str, Any]) -> str:
    """What the model reads: numbered results it can cite by URL."""
    if not hits:
        return f"No web results for: {query}"
    lines = [f"Web results for: {query}"]
    if extra.get("answer"):
        lines.append(f"Provider's summary answer: {extra['answer']}")
    for i, h in enumerate(hits, 1):
        lines.append(f"\n[{i}] {h.title}\nURL: {h.url}")
        if h.snippet:
            lines.append(h.snippet)
        if h.text:
            lines.append(f"Page text:\n{h.text}")
    return "\n".join(lines)


def web_search_kind(cfg: Any, services: Any) -> SingleTool:
    """Factory for ``kind: web_search`` (cfg is the ``tools:`` entry)."""
    if cfg.parameters is not None:
        raise ValueError("web_search defines its own parameters (query, max_results); remove 'parameters'")
    if cfg.write:
        raise ValueError("web_search only reads; it cannot be a write tool")
    options = WebSearchOptions.model_validate(cfg.options)
    return SingleTool(WebSearchTool(cfg.name, cfg.description, options, timeout=cfg.timeout))
