"""One adapter per search API format: how to ask for results and how to read them back as ``Hit``s.

Each adapter follows the provider's documented request and response shapes:

- SearxNG: ``GET {base}/search?q=…&format=json`` → ``{"results": [{"title", "url", "content", "engine", …}]}``
  (the instance must list ``json`` in ``search.formats``; it returns one page, ~20 results, and has no count
  parameter, so the tool slices).
- Brave Search API: ``GET {base}/res/v1/web/search?q=…&count=N`` with ``X-Subscription-Token`` →
  ``{"web": {"results": [{"title", "url", "description", …}]}}`` (``count`` ≤ 20; descriptions carry ``<strong>``
  highlights, stripped here).
- Tavily: ``POST {base}/search`` with ``Authorization: Bearer <key>`` and ``{"query", "max_results",
  "include_domains", "exclude_domains"}`` → ``{"results": [{"title", "url", "content", "score"}], "answer"?}``.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

# Highlight markup some engines put in snippets (Brave's <strong>, SearxNG engines' <b>/<em>).
_TAGS = re.compile(r"<[^>]{1,100}>")
_SPACE = re.compile(r"\s+")


@dataclass(slots=True)
class Hit:
    """One normalised search result."""

    title: str
    url: str
    snippet: str
    text: str | None = None  # the page's main text, when fetch-and-extract ran for it
    score: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"title": self.title, "url": self.url, "snippet": self.snippet}
        if self.score is not None:
            out["score"] = self.score
        if self.text is not None:
            out["text"] = self.text
        return out


@dataclass(slots=True)
class SearchRequest:
    """What to send: the adapter fills it, the tool sends it with its one HTTP client."""

    method: str
    url: str
    params: dict[str, str] | None = None
    json: dict[str, Any] | None = None
    headers: dict[str, str] | None = None


def clean(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAGS.sub("", text))).strip()


def _hits(items: Any, snippet_key: str) -> list[Hit]:
    """Results with an http(s) URL; anything else in a provider's list (ads, malformed rows) is dropped."""
    out: list[Hit] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        url = item.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            continue
        score = item.get("score")
        out.append(
            Hit(
                title=clean(item.get("title")) or url,
                url=url,
                snippet=clean(item.get(snippet_key)),
                score=float(score) if isinstance(score, int | float) else None,
            )
        )
    return out


class Provider:
    """A search API format. ``wanted`` is how many results to ask for (the tool may filter some out)."""

    name = ""
    default_base_url = ""
    needs_key = True
    max_count = 20

    def __init__(self, base_url: str | None, api_key: str | None) -> None:
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.api_key = api_key

    def request(self, query: str, wanted: int, allow: list[str], deny: list[str]) -> SearchRequest:
        raise NotImplementedError

    def parse(self, body: Any) -> tuple[list[Hit], dict[str, Any]]:
        """(hits, extra data worth keeping, e.g. Tavily's answer)."""
        raise NotImplementedError


class SearxNG(Provider):
    name = "searxng"
    needs_key = False

    def request(self, query: str, wanted: int, allow: list[str], deny: list[str]) -> SearchRequest:
        headers = {"Accept": "application/json"}
        if self.api_key:  # instances behind a proxy that checks a bearer token
            headers["Authorization"] = f"Bearer {self.api_key}"
        return SearchRequest("GET", f"{self.base_url}/search", params={"q": query, "format": "json"}, headers=headers)

    def parse(self, body: Any) -> tuple[list[Hit], dict[str, Any]]:
        body = body if isinstance(body, dict) else {}
        answers = [a for a in body.get("answers") or [] if isinstance(a, str)]
        return _hits(body.get("results"), "content"), ({"answers": answers} if answers else {})


class Brave(Provider):
    name = "brave"
    default_base_url = "https://api.search.brave.com"

    def request(self, query: str, wanted: int, allow: list[str], deny: list[str]) -> SearchRequest:
        return SearchRequest(
            "GET",
            f"{self.base_url}/res/v1/web/search",
            params={"q": query, "count": str(min(wanted, self.max_count))},
            headers={"Accept": "application/json", "X-Subscription-Token": self.api_key or ""},
        )

    def parse(self, body: Any) -> tuple[list[Hit], dict[str, Any]]:
        web = body.get("web") if isinstance(body, dict) else None
        return _hits(web.get("results") if isinstance(web, dict) else None, "description"), {}


class Tavily(Provider):
    name = "tavily"
    default_base_url = "https://api.tavily.com"

    def request(self, query: str, wanted: int, allow: list[str], deny: list[str]) -> SearchRequest:
        body: dict[str, Any] = {"query": query, "max_results": min(wanted, self.max_count)}
        # Tavily filters by domain itself; the tool filters again (the lists also guard fetched pages).
        if allow:
            body["include_domains"] = allow
        if deny:
            body["exclude_domains"] = deny
        return SearchRequest(
            "POST",
            f"{self.base_url}/search",
            json=body,
            headers={"Authorization": f"Bearer {self.api_key or ''}", "Accept": "application/json"},
        )

    def parse(self, body: Any) -> tuple[list[Hit], dict[str, Any]]:
        body = body if isinstance(body, dict) else {}
        answer = body.get("answer")
        return _hits(body.get("results"), "content"), ({"answer": answer} if isinstance(answer, str) else {})


PROVIDERS: dict[str, type[Provider]] = {p.name: p for p in (SearxNG, Brave, Tavily)}
