"""Which result pages a web-search tool may show or open, and fetch-and-extract of a page's main text.

Search results come from outside, so a page to open is treated as untrusted: only http(s), only hosts the
tool's domain lists allow (checked again at every redirect, which is followed by hand for that reason), not
private or loopback addresses unless the operator allows them (a result pointing at an internal address must
not turn the search tool into a proxy into the network), a byte cap and a time cap.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
import trafilatura
from aiohttp.resolver import ThreadedResolver

MAX_REDIRECTS = 3
_HTML_TYPES = ("text/html", "application/xhtml+xml", "text/plain")


class DomainRules:
    """``allow``: only these domains (and their subdomains), when set; ``deny``: never these."""

    def __init__(self, allow: list[str], deny: list[str]) -> None:
        self.allow = [_domain(d) for d in allow if _domain(d)]
        self.deny = [_domain(d) for d in deny if _domain(d)]

    def permits(self, url: str) -> bool:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        if not host:
            return False
        if any(_under(host, d) for d in self.deny):
            return False
        return not self.allow or any(_under(host, d) for d in self.allow)


def _domain(d: str) -> str:
    return d.strip().lower().removeprefix("*.").strip(".")


def _under(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def is_private(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    return not ip.is_global


class PublicOnlyResolver(ThreadedResolver):
    """Refuses names that resolve to a private, loopback or link-local address (checked at connect time, so a
    name cannot pass a check and then resolve elsewhere)."""

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> Any:
        results = await super().resolve(host, port, family)
        if any(is_private(r["host"]) for r in results):
            raise OSError(f"{host} resolves to a private address")
        return results


def page_connector(allow_private: bool) -> aiohttp.TCPConnector:
    return aiohttp.TCPConnector(limit=16, ttl_dns_cache=60, resolver=None if allow_private else PublicOnlyResolver())


class PageFetcher:
    """Fetches a result page and returns its main text (trafilatura), within the tool's caps."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        rules: DomainRules,
        *,
        timeout: float,
        max_bytes: int,
        max_chars: int,
        allow_private: bool,
    ) -> None:
        self.session = session
        self.rules = rules
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.max_bytes = max_bytes
        self.max_chars = max_chars
        self.allow_private = allow_private

    def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL: {url[:200]}")
        if not self.rules.permits(url):
            raise ValueError(f"domain not allowed: {parts.hostname}")
        # Literal addresses never reach the resolver, so they are checked here.
        if not self.allow_private and is_private(parts.hostname or ""):
            raise ValueError(f"private address: {parts.hostname}")

    async def fetch(self, url: str) -> str:
        """The page's extracted text; raises with a short reason when the page cannot be used."""
        try:
            async with asyncio.timeout(self.timeout.total):
                body, charset, final = await self._download(url)
        except aiohttp.ClientConnectorError as e:  # keeps the resolver's reason (a private address) readable
            raise ValueError(str(e.os_error) or str(e)) from None
        text = body.decode(charset or "utf-8", errors="replace")
        # Parsing is CPU work: off the event loop.
        extracted = await asyncio.to_thread(
            trafilatura.extract, text, url=final, include_comments=False, include_tables=True, fast=True
        )
        if not extracted:
            raise ValueError("no main text found")
        extracted = extracted.strip()
        if len(extracted) > self.max_chars:
            extracted = extracted[: self.max_chars] + " […]"
        return extracted

    async def _download(self, url: str) -> tuple[bytes, str | None, str]:
        for _ in range(MAX_REDIRECTS + 1):
            self._check(url)
            async with self.session.get(url, allow_redirects=False, timeout=self.timeout) as resp:
                if resp.status in (301, 302, 303, 307, 308) and "Location" in resp.headers:
                    url = urljoin(url, resp.headers["Location"])
                    continue
                if resp.status != 200:
                    raise ValueError(f"HTTP {resp.status}")
                if resp.content_type not in _HTML_TYPES:
                    raise ValueError(f"not a web page ({resp.content_type})")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(65536):
                    chunks.append(chunk)
                    size += len(chunk)
                    if size >= self.max_bytes:  # keep the head: the main text is usually there
                        break
                return b"".join(chunks)[: self.max_bytes], resp.charset, str(resp.url)
        raise ValueError("too many redirects")
