"""The ``http`` tool kind: one configured HTTP endpoint the model may call.

Safety comes from the shape of the URL, fixed at config time: the template's scheme, host and port never
change, and arguments only fill ``{name}`` placeholders in the path and query, each value percent-encoded as a
whole (so ``../``, ``http://evil`` or ``@evil`` stay inside one path segment or query value). A value that is
exactly ``.`` or ``..`` is refused (it would climb the path). Redirects are followed only on the same origin.
Header values (``${ENV}`` secrets, interpolated when the config loads) are kept as ``SecretStr`` and never logged.

For ``POST``/``PUT``/``PATCH`` the arguments not used in the URL are the JSON body; for ``GET``/``DELETE`` they
become query parameters. The response is read up to ``max_response_bytes``; the model reads its text (JSON
compacted), the structured data keeps the parsed JSON.
"""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from yarl import URL

from portico.actions.tool import SingleTool, Tool, ToolContext, ToolResult
from portico.config.tools import ToolConfig
from portico.pipeline.options import parse_options

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class HttpOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field(min_length=1)  # "https://host[:port]/path/{name}?q={other}": placeholders only after the host
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    max_response_bytes: int = Field(default=1_000_000, ge=1024, le=64_000_000)
    max_redirects: int = Field(default=3, ge=0, le=10)  # same origin only


class UrlTemplate:
    """A URL whose origin is fixed and whose path/query placeholders are filled with percent-encoded values."""

    def __init__(self, template: str) -> None:
        parts = urlsplit(template)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url must be an absolute http(s) URL, not '{template}'")
        if "{" in parts.netloc or "}" in parts.netloc:
            raise ValueError("url: placeholders may fill the path and query only, never the scheme, host or port")
        if parts.fragment:
            raise ValueError("url: a fragment is never sent; remove it")
        self.origin = URL(f"{parts.scheme}://{parts.netloc}").origin()
        self.path = parts.path or "/"
        self.query = parts.query
        self.names = _PLACEHOLDER.findall(self.path) + _PLACEHOLDER.findall(self.query)
        for piece in (self.path, self.query):  # a brace that is not a placeholder is a typo, not a literal
            if "{" in _PLACEHOLDER.sub("", piece) or "}" in _PLACEHOLDER.sub("", piece):
                raise ValueError("url: '{' and '}' are only allowed around a placeholder name like {order_id}")

    def fill(self, arguments: dict[str, Any], extra_query: dict[str, Any] | None) -> URL:
        def path_value(m: re.Match[str]) -> str:
            value = _scalar(m.group(1), arguments.get(m.group(1)))
            if value in (".", ".."):
                raise ValueError(f"argument '{m.group(1)}' may not be '{value}'")
            return quote(value, safe="")

        def query_value(m: re.Match[str]) -> str:
            return quote(_scalar(m.group(1), arguments.get(m.group(1))), safe="")

        path = _PLACEHOLDER.sub(path_value, self.path)
        query = _PLACEHOLDER.sub(query_value, self.query)
        if extra_query:
            pairs = [(k, _query_item(v)) for k, v in extra_query.items() if v is not None]
            more = urlencode(pairs, doseq=True, quote_via=quote)
            query = f"{query}&{more}" if query and more else (query or more)
        url = URL(str(self.origin) + path + (f"?{query}" if query else ""), encoded=True)
        if url.origin() != self.origin:  # cannot happen with encoded values; kept as the last line of defence
            raise ValueError("the filled URL left the configured host")
        return url


def _scalar(name: str, value: Any) -> str:
    if value is None:
        raise ValueError(f"argument '{name}' is needed to build the URL")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(f"argument '{name}' must be a string or a number to go into the URL")


def _query_item(value: Any) -> Any:
    if isinstance(value, list):
        return [_query_item(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return orjson.dumps(value).decode()
    return value


def default_parameters(names: list[str]) -> dict[str, Any]:
    """Without ``parameters`` in the config: every placeholder is a required string."""
    return {"type": "object", "properties": {n: {"type": "string"} for n in names}, "required": sorted(set(names)),
            "additionalProperties": False}  # fmt: skip


class HttpTool(Tool):
    kind = "http"

    def __init__(self, cfg: ToolConfig, options: HttpOptions) -> None:
        self.template = UrlTemplate(options.url)
        params = cfg.parameters or default_parameters(self.template.names)
        super().__init__(cfg.name, cfg.description, params, write=cfg.write, timeout=cfg.timeout)
        declared = set((self.parameters.get("properties") or {}).keys())
        missing = [n for n in self.template.names if n not in declared]
        if missing:
            raise ValueError(f"url placeholders {missing} are not properties in parameters")
        self.options = options
        self._session: aiohttp.ClientSession | None = None  # one pooled session per tool, opened on first use

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=64, ttl_dns_cache=300, keepalive_timeout=60)
            # trust_env off: no proxy from the environment decides where a tool call goes.
            self._session = aiohttp.ClientSession(connector=connector, trust_env=False,
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout))  # fmt: skip
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def public(self) -> dict[str, Any]:
        """What admin views show: the method and URL template, header names but never their values."""
        return {"method": self.options.method, "url": self.options.url, "headers": sorted(self.options.headers)}

    async def call(self, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        o = self.options
        rest = {k: v for k, v in arguments.items() if k not in self.template.names}
        has_body = o.method in _BODY_METHODS
        url = self.template.fill(arguments, None if has_body else rest)
        headers = {k: v.get_secret_value() for k, v in o.headers.items()}
        if ctx.idempotency_key:
            headers["Idempotency-Key"] = ctx.idempotency_key
        body = orjson.dumps(rest) if has_body else None
        if body is not None:
            headers.setdefault("Content-Type", "application/json")
        method = o.method
        for _ in range(o.max_redirects + 1):
            async with self._client().request(method, url, data=body, headers=headers, allow_redirects=False) as resp:
                if resp.status in _REDIRECTS and "Location" in resp.headers:
                    target = url.join(URL(resp.headers["Location"]))
                    if target.origin() != self.template.origin:
                        return ToolResult(f"HTTP {resp.status}: the endpoint redirected to another host "
                                          f"({target.host}); not followed.", is_error=True)  # fmt: skip
                    url = target
                    if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                        method, body = "GET", None
                    continue
                raw, truncated = await _read_limited(resp, o.max_response_bytes)
                raw = _scrub(raw, headers)
                return _result(resp.status, resp.content_type, raw, truncated, o.max_response_bytes)
        return ToolResult(f"the endpoint redirected more than {o.max_redirects} times", is_error=True)


_SENSITIVE = re.compile(r"auth|key|token|secret|cookie|session|signature|password", re.I)


def _scrub(raw: bytes, headers: dict[str, str]) -> bytes:
    """The credentials the tool sent, out of what came back: an endpoint may echo them ("invalid token X",
    a debug echo), and the result goes to the model, the trace and maybe the client."""
    values: list[str] = []
    for name, value in headers.items():
        if _SENSITIVE.search(name):
            values.append(value)
            scheme, _, token = value.partition(" ")
            if token and scheme.lower() in ("bearer", "basic", "token"):
                values.append(token)
    for v in sorted((v for v in values if len(v) >= 8), key=len, reverse=True):
        raw = raw.replace(v.encode(), b"[redacted]")
    return raw


async def _read_limited(resp: aiohttp.ClientResponse, limit: int) -> tuple[bytes, bool]:
    """At most ``limit`` bytes of the body; the connection is dropped rather than drained past it."""
    buf = bytearray()
    while len(buf) <= limit:
        chunk = await resp.content.read(min(65536, limit + 1 - len(buf)))
        if not chunk:
            return bytes(buf), False
        buf += chunk
    resp.close()
    return bytes(buf[:limit]), True


def _result(status: int, content_type: str, raw: bytes, truncated: bool, limit: int) -> ToolResult:
    text = raw.decode("utf-8", errors="replace")
    data: Any = None
    if "json" in content_type and not truncated:
        try:
            data = orjson.loads(raw)
            text = orjson.dumps(data).decode()  # compact: fewer tokens for the same content
        except orjson.JSONDecodeError:
            pass
    if truncated:
        text += f"\n[response truncated at {limit} bytes]"
    if status >= 400:
        return ToolResult(f"HTTP {status}: {text}", data=data, is_error=True)
    return ToolResult(text, data=data)


def http_kind(cfg: ToolConfig, services: Any) -> SingleTool:
    return SingleTool(HttpTool(cfg, parse_options(HttpOptions, cfg.options)))
