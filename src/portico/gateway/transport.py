"""HTTP to upstreams: one pooled aiohttp session per upstream origin, created once; SSE framing; error mapping.

Providers never touch HTTP. Every failure leaves here as an ``UpstreamError`` whose status tells the client
what happened (400 the upstream rejected the request, 429 rate limited, 502 bad answer, 503 unreachable,
504 timeout) and whose message carries the deployment and the upstream's own reason.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from pydantic import SecretStr

from portico.config.schema import HttpDeployment
from portico.gateway.eventstream import EVENTSTREAM, eventstream_events, is_binary_frame, prepend
from portico.gateway.providers.base import HttpProvider, UpstreamRequest
from portico.protocol.errors import UpstreamError


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class HttpTransport:
    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def open(self, base_urls: list[str]) -> None:
        """Create the pooled sessions. Must run inside the server's event loop (at start-up)."""
        for url in base_urls:
            origin = _origin(url)
            if origin not in self._sessions:
                connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=60)
                # auto_decompress stays on; raise_for_status off — statuses are mapped below.
                self._sessions[origin] = aiohttp.ClientSession(
                    connector=connector, json_serialize=lambda o: orjson.dumps(o).decode(), trust_env=False
                )

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for s in sessions.values():
            await s.close()

    def _session(self, url: str) -> aiohttp.ClientSession:
        try:
            return self._sessions[_origin(url)]
        except KeyError:
            raise RuntimeError(f"no HTTP session for {_origin(url)}; transport.open() was not given it") from None

    async def post_json(self, up: UpstreamRequest, dep: HttpDeployment, provider: HttpProvider) -> dict[str, Any]:
        t = dep.timeouts
        try:
            async with self._session(str(up.url)).post(
                up.url,
                data=up.payload(),
                headers=up.headers,
                params=up.params or None,
                timeout=_client_timeout(t.total, t.connect, t.first_byte),
            ) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise _status_error(dep, provider, resp.status, body, resp.headers)
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamError(f"{dep.label}: upstream timed out", status=504, code="upstream_timeout") from None
        except aiohttp.ClientError as e:
            raise _connection_error(dep, e) from None
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{dep.label}: upstream answered with invalid JSON", status=502) from None
        if not isinstance(data, dict):
            raise UpstreamError(f"{dep.label}: upstream answered with a JSON {type(data).__name__}", status=502)
        return data

    async def stream(
        self, up: UpstreamRequest, dep: HttpDeployment, provider: HttpProvider
    ) -> AsyncIterator[tuple[str | None, bytes]]:
        """Yield ``(event, data)`` SSE events. Closing the generator closes the upstream connection."""
        t = dep.timeouts
        try:
            cm = self._session(str(up.url)).post(
                up.url,
                data=up.payload(),
                headers=up.headers,
                params=up.params or None,
                timeout=_client_timeout(t.total, t.connect, t.first_byte),
            )
            async with cm as resp:
                if resp.status >= 400:
                    body = await resp.read()
                    raise _status_error(dep, provider, resp.status, body, resp.headers)
                if resp.content_type == EVENTSTREAM:  # AWS's binary framing (Bedrock ConverseStream)
                    async for event in _eventstream_or_sse(resp.content.iter_any()):
                        yield event
                elif resp.content_type == "application/json":
                    # Some upstreams answer a stream request with one JSON body (Gemini without alt=sse
                    # sends an array of responses): treat each element as one event.
                    for event in _json_events(await resp.read()):
                        yield event
                else:
                    async for event in _sse_events(resp.content.iter_any()):
                        yield event
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise UpstreamError(f"{dep.label}: upstream timed out", status=504, code="upstream_timeout") from None
        except aiohttp.ClientPayloadError as e:
            raise UpstreamError(f"{dep.label}: upstream stream broke off: {e}", status=502) from None
        except aiohttp.ClientError as e:
            raise _connection_error(dep, e) from None


@functools.lru_cache(maxsize=64)
def _client_timeout(total: float, connect: float, first_byte: float) -> aiohttp.ClientTimeout:
    """One immutable timeout object per distinct setting, not one per request.

    ``total`` covers the whole call, stream included; ``sock_read`` bounds the wait for the headers and for each
    later read (first byte, then inter-chunk gaps)."""
    return aiohttp.ClientTimeout(total=total, connect=connect, sock_connect=connect, sock_read=first_byte)


# One SSE event may carry a large inline image; past this the upstream is misbehaving.
MAX_EVENT_BYTES = 64 * 1024 * 1024


async def _lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Lines of any length (aiohttp's own line iterator stops at 512 KiB), without their CR/LF."""
    buf = bytearray()
    async for data in chunks:
        buf += data
        start = 0
        while (nl := buf.find(b"\n", start)) != -1:
            yield bytes(buf[start : nl - 1 if nl > start and buf[nl - 1] == 13 else nl])
            start = nl + 1
        del buf[:start]
        if len(buf) > MAX_EVENT_BYTES:
            raise UpstreamError(f"upstream sent an SSE line over {MAX_EVENT_BYTES} bytes", status=502)
    if buf:
        yield bytes(buf.rstrip(b"\r"))


async def _sse_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[tuple[str | None, bytes]]:
    """Minimal SSE framing (WHATWG): ``event:``/``data:`` lines, blank line dispatches, ``:`` comments."""
    event: str | None = None
    data: list[bytes] = []
    async for line in _lines(chunks):
        if not line:
            if data:
                yield event, b"\n".join(data)
            event, data = None, []
            continue
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data.append(value)
        elif name == b"event":
            event = value.decode()
    if data:  # a last event without its trailing blank line
        yield event, b"\n".join(data)


async def _eventstream_or_sse(chunks: AsyncIterator[bytes]) -> AsyncIterator[tuple[str | None, bytes]]:
    """AWS event-stream frames, or SSE under the same content type (llm-katan, some Bedrock-compatible proxies):
    the first bytes tell which (a binary frame starts with its length, SSE with a field name)."""
    first = await anext(chunks, b"")
    if not first:
        return
    rest = prepend(first, chunks)
    framed = eventstream_events(rest) if is_binary_frame(first) else _sse_events(rest)
    async for event in framed:
        yield event


def _json_events(body: bytes) -> list[tuple[str | None, bytes]]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UpstreamError("upstream answered a stream request with invalid JSON", status=502) from None
    items = data if isinstance(data, list) else [data]
    return [(None, orjson.dumps(item)) for item in items]


def _status_error(dep: HttpDeployment, provider: HttpProvider, status: int, body: bytes, headers: Any) -> UpstreamError:
    reason = scrub(provider.error_message(status, body), dep)
    msg = f"{dep.label}: upstream returned {status}: {reason}"
    if status == 429:
        extra = {"retry-after": headers["retry-after"]} if "retry-after" in headers else {}
        return UpstreamError(msg, status=429, upstream_status=status, code="rate_limit_exceeded", headers=extra)
    if status in (400, 413, 422):
        # The upstream rejected what the client sent (e.g. context too long): the client's error, not ours.
        return UpstreamError(msg, status=400, upstream_status=status, retryable=False, code="upstream_rejected")
    if status in (401, 403):
        return UpstreamError(msg, status=502, upstream_status=status, retryable=False, code="upstream_auth")
    if status in (503, 504):
        return UpstreamError(msg, status=status, upstream_status=status)
    return UpstreamError(msg, status=502, upstream_status=status, retryable=status >= 500 or status == 408)


def _connection_error(dep: HttpDeployment, e: aiohttp.ClientError) -> UpstreamError:
    return UpstreamError(f"{dep.label}: cannot reach upstream: {scrub(str(e), dep)}", status=503,
                         code="upstream_unreachable")  # fmt: skip


def scrub(text: str, dep: HttpDeployment) -> str:
    """The deployment's credentials out of an upstream's words: some providers repeat the key they were sent
    ("Incorrect API key provided: sk-…"), and an aiohttp error may show a URL carrying ``?key=``. The message
    goes to the client, the log and the trace."""
    secrets = [v.get_secret_value() for v in vars(dep).values() if isinstance(v, SecretStr)]  # api_key, aws_*
    secrets += list(dep.headers.values())
    for value in sorted((v for v in secrets if len(v) >= 8), key=len, reverse=True):
        text = text.replace(value, "[redacted]")
    return text
