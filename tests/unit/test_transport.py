"""HttpTransport against a real in-process aiohttp server: SSE framing, JSON-as-stream, status mapping, timeouts."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from portico.config.schema import OpenAIDeployment
from portico.gateway.providers.base import UpstreamRequest
from portico.gateway.providers.openai import OpenAIProvider
from portico.gateway.transport import HttpTransport
from portico.protocol.errors import UpstreamError

PROVIDER = OpenAIProvider()

# The SSE stream, cut into pieces that split lines, CRLF pairs and a multi-byte character across TCP writes.
SSE_PIECES = [
    b": keep-alive comment\r\n",
    b"event: message_st",
    b'art\r\ndata: {"a"',
    b":1}\r",
    b"\n\r\n",
    b"data: line one\n",
    b"data: line two\n",
    b"data:\n",  # an empty data line adds an empty line to the payload
    b"\n",
    b":comment without space\n",
    b"\n",  # a blank line with no data dispatches nothing
    b"event: ping\ndata:no-space\nid: 7\nretry: 10\n\n",
    b"data: caf\xc3",
    b"\xa9 \xe2\x82",
    b"\xac\n\n",
    b"event: last\ndata: final without blank line\n",
]
SSE_EVENTS: list[tuple[str | None, bytes]] = [
    ("message_start", b'{"a":1}'),
    (None, b"line one\nline two\n"),
    ("ping", b"no-space"),
    (None, "café €".encode()),
    ("last", b"final without blank line"),
]

BIG = 1_000_000  # one SSE event of 1 MB, e.g. an inline base64 image
received: list[dict[str, Any]] = []


async def record(request: web.Request) -> None:
    headers = {k.lower(): v for k, v in request.headers.items()}
    received.append({"body": await request.json(), "headers": headers, "query": dict(request.query)})


async def sse(request: web.Request) -> web.StreamResponse:
    await record(request)
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for piece in SSE_PIECES:
        await resp.write(piece)
        await asyncio.sleep(0.005)  # let each piece leave as its own TCP segment
    await resp.write_eof()
    return resp


async def sse_no_newline(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: one\n\ndata: two")
    await resp.write_eof()
    return resp


async def sse_big(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: " + b"x" * BIG + b"\n\n")
    await resp.write_eof()
    return resp


async def sse_broken(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: one\n\n")
    await asyncio.sleep(0.05)
    assert request.transport is not None
    request.transport.close()  # chunked body never finished
    return resp


async def sse_stall(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    await resp.write(b"data: one\n\n")
    await asyncio.sleep(5)
    return resp


async def sse_trickle(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await resp.prepare(request)
    for i in range(200):
        await resp.write(b"data: %d\n\n" % i)
        await asyncio.sleep(0.02)
    return resp


async def json_array(request: web.Request) -> web.Response:
    return web.json_response([{"a": 1}, {"b": [2, 3]}, {}])


async def json_object(request: web.Request) -> web.Response:
    return web.json_response({"whole": True})


async def json_invalid(request: web.Request) -> web.Response:
    return web.Response(body=b"{not json", content_type="application/json")


async def ok(request: web.Request) -> web.Response:
    await record(request)
    return web.json_response({"choices": [], "echo": received[-1]["body"]})


async def not_a_dict(request: web.Request) -> web.Response:
    return web.json_response([1, 2])


async def status(request: web.Request) -> web.Response:
    code = int(request.match_info["code"])
    headers = {"Retry-After": "7"} if code == 429 and "no-retry" not in request.query else {}
    body = {"error": {"message": f"upstream says {code}", "type": "x"}}
    return web.json_response(body, status=code, headers=headers)


async def plain_error(request: web.Request) -> web.Response:
    return web.Response(text="  gateway exploded  ", status=500)


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.json_response({"choices": []})


@pytest.fixture
async def base_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/sse", sse)
    app.router.add_post("/v1/sse-no-newline", sse_no_newline)
    app.router.add_post("/v1/sse-big", sse_big)
    app.router.add_post("/v1/sse-broken", sse_broken)
    app.router.add_post("/v1/sse-stall", sse_stall)
    app.router.add_post("/v1/sse-trickle", sse_trickle)
    app.router.add_post("/v1/json-array", json_array)
    app.router.add_post("/v1/json-object", json_object)
    app.router.add_post("/v1/json-invalid", json_invalid)
    app.router.add_post("/v1/ok", ok)
    app.router.add_post("/v1/not-a-dict", not_a_dict)
    app.router.add_post("/v1/status/{code}", status)
    app.router.add_post("/v1/plain-error", plain_error)
    app.router.add_post("/v1/slow", slow)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    received.clear()
    try:
        yield str(server.make_url("/v1"))
    finally:
        await server.close()


@pytest.fixture
async def transport(base_url: str) -> AsyncIterator[HttpTransport]:
    t = HttpTransport()
    t.open([base_url])
    try:
        yield t
    finally:
        await t.close()


def dep(base_url: str, **timeouts: float) -> OpenAIDeployment:
    t = {"connect": 1.0, "first_byte": 0.3, "total": 10.0, **timeouts}
    return OpenAIDeployment(provider="openai", base_url=base_url, model="up-model", name="up-a", timeouts=t)


def up(base_url: str, path: str, **kw: Any) -> UpstreamRequest:
    return UpstreamRequest(f"{base_url}{path}", {"content-type": "application/json"}, {"hello": "world"}, **kw)


async def collect(t: HttpTransport, base_url: str, path: str, **timeouts: float) -> list[tuple[str | None, bytes]]:
    return [e async for e in t.stream(up(base_url, path), dep(base_url, **timeouts), PROVIDER)]


async def stream_error(t: HttpTransport, base_url: str, path: str, **timeouts: float) -> UpstreamError:
    with pytest.raises(UpstreamError) as exc:
        await asyncio.wait_for(collect(t, base_url, path, **timeouts), 5)
    return exc.value


async def post_error(t: HttpTransport, base_url: str, path: str, **timeouts: float) -> UpstreamError:
    with pytest.raises(UpstreamError) as exc:
        await asyncio.wait_for(t.post_json(up(base_url, path), dep(base_url, **timeouts), PROVIDER), 5)
    return exc.value


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


# ---- SSE framing ------------------------------------------------------------------------------------------


async def test_sse_events_parsed_exactly(transport: HttpTransport, base_url: str) -> None:
    assert await collect(transport, base_url, "/sse") == SSE_EVENTS


async def test_stream_sends_body_headers_and_params(transport: HttpTransport, base_url: str) -> None:
    req = UpstreamRequest(f"{base_url}/sse", {"authorization": "Bearer k", "x-extra": "1"}, {"n": 1}, {"alt": "sse"})
    events = [e async for e in transport.stream(req, dep(base_url), PROVIDER)]
    assert events == SSE_EVENTS
    assert received[0]["body"] == {"n": 1}
    assert received[0]["headers"]["authorization"] == "Bearer k"
    assert received[0]["headers"]["x-extra"] == "1"
    assert received[0]["query"] == {"alt": "sse"}


async def test_last_event_without_any_newline(transport: HttpTransport, base_url: str) -> None:
    assert await collect(transport, base_url, "/sse-no-newline") == [(None, b"one"), (None, b"two")]


async def test_large_sse_event_is_parsed(transport: HttpTransport, base_url: str) -> None:
    assert await collect(transport, base_url, "/sse-big") == [(None, b"x" * BIG)]


async def test_json_array_stream_becomes_one_event_per_element(transport: HttpTransport, base_url: str) -> None:
    events = await collect(transport, base_url, "/json-array")
    assert [(e, orjson.loads(d)) for e, d in events] == [(None, {"a": 1}), (None, {"b": [2, 3]}), (None, {})]


async def test_json_object_stream_becomes_one_event(transport: HttpTransport, base_url: str) -> None:
    events = await collect(transport, base_url, "/json-object")
    assert [(e, orjson.loads(d)) for e, d in events] == [(None, {"whole": True})]


async def test_invalid_json_stream_is_502(transport: HttpTransport, base_url: str) -> None:
    err = await stream_error(transport, base_url, "/json-invalid")
    assert err.status == 502
    assert "invalid JSON" in err.message


async def test_stream_broken_mid_body_is_502(transport: HttpTransport, base_url: str) -> None:
    got: list[tuple[str | None, bytes]] = []
    with pytest.raises(UpstreamError) as exc:
        async for e in transport.stream(up(base_url, "/sse-broken"), dep(base_url), PROVIDER):
            got.append(e)
    assert got == [(None, b"one")]
    assert exc.value.status == 502
    assert exc.value.message.startswith("up-a: upstream stream broke off")


async def test_stream_stalling_after_first_event_times_out(transport: HttpTransport, base_url: str) -> None:
    got: list[tuple[str | None, bytes]] = []
    with pytest.raises(UpstreamError) as exc:
        async for e in transport.stream(up(base_url, "/sse-stall"), dep(base_url, first_byte=0.3), PROVIDER):
            got.append(e)
    assert got == [(None, b"one")]
    assert exc.value.status == 504
    assert exc.value.code == "upstream_timeout"


async def test_stream_total_timeout(transport: HttpTransport, base_url: str) -> None:
    err = await stream_error(transport, base_url, "/sse-trickle", first_byte=2.0, total=0.3)
    assert err.status == 504
    assert err.code == "upstream_timeout"
    assert "up-a" in err.message


async def test_closing_stream_generator_early(transport: HttpTransport, base_url: str) -> None:
    gen = transport.stream(up(base_url, "/sse-trickle"), dep(base_url), PROVIDER)
    assert await anext(gen) == (None, b"0")
    assert await anext(gen) == (None, b"1")
    await gen.aclose()
    # The pooled session still works for the next request.
    assert await collect(transport, base_url, "/sse") == SSE_EVENTS


# ---- status mapping ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("call", ["stream", "post"])
async def test_429_keeps_retry_after(transport: HttpTransport, base_url: str, call: str) -> None:
    err = await (stream_error if call == "stream" else post_error)(transport, base_url, "/status/429")
    assert err.status == 429
    assert err.upstream_status == 429
    assert err.code == "rate_limit_exceeded"
    assert err.headers == {"retry-after": "7"}
    assert err.message == "up-a: upstream returned 429: upstream says 429"


async def test_429_without_retry_after(transport: HttpTransport, base_url: str) -> None:
    err = await post_error(transport, base_url, "/status/429?no-retry=1")
    assert err.status == 429
    assert err.headers == {}


@pytest.mark.parametrize("code", [400, 413, 422])
@pytest.mark.parametrize("call", ["stream", "post"])
async def test_client_errors_stay_400_and_not_retryable(
    transport: HttpTransport, base_url: str, call: str, code: int
) -> None:
    err = await (stream_error if call == "stream" else post_error)(transport, base_url, f"/status/{code}")
    assert err.status == 400
    assert err.upstream_status == code
    assert err.retryable is False
    assert err.code == "upstream_rejected"
    assert err.type == "upstream_error"
    assert err.message == f"up-a: upstream returned {code}: upstream says {code}"


@pytest.mark.parametrize("code", [401, 403])
@pytest.mark.parametrize("call", ["stream", "post"])
async def test_auth_errors_are_502_upstream_auth(transport: HttpTransport, base_url: str, call: str, code: int) -> None:
    err = await (stream_error if call == "stream" else post_error)(transport, base_url, f"/status/{code}")
    assert err.status == 502
    assert err.upstream_status == code
    assert err.code == "upstream_auth"
    assert err.retryable is False
    assert "up-a" in err.message
    assert f"upstream says {code}" in err.message


@pytest.mark.parametrize("call", ["stream", "post"])
async def test_500_is_502_retryable(transport: HttpTransport, base_url: str, call: str) -> None:
    err = await (stream_error if call == "stream" else post_error)(transport, base_url, "/status/500")
    assert err.status == 502
    assert err.upstream_status == 500
    assert err.retryable is True
    assert err.message == "up-a: upstream returned 500: upstream says 500"


@pytest.mark.parametrize("code", [503, 504])
@pytest.mark.parametrize("call", ["stream", "post"])
async def test_503_and_504_pass_through(transport: HttpTransport, base_url: str, call: str, code: int) -> None:
    err = await (stream_error if call == "stream" else post_error)(transport, base_url, f"/status/{code}")
    assert err.status == code
    assert err.upstream_status == code
    assert err.retryable is True
    assert err.message == f"up-a: upstream returned {code}: upstream says {code}"


@pytest.mark.parametrize(("code", "retryable"), [(404, False), (408, True), (502, True)])
async def test_other_statuses_are_502(transport: HttpTransport, base_url: str, code: int, retryable: bool) -> None:
    err = await post_error(transport, base_url, f"/status/{code}")
    assert err.status == 502
    assert err.upstream_status == code
    assert err.retryable is retryable


async def test_plain_text_error_body_is_the_reason(transport: HttpTransport, base_url: str) -> None:
    err = await post_error(transport, base_url, "/plain-error")
    assert err.message == "up-a: upstream returned 500: gateway exploded"


async def test_label_defaults_to_provider_and_model(transport: HttpTransport, base_url: str) -> None:
    d = OpenAIDeployment(provider="openai", base_url=base_url, model="gpt-q")
    with pytest.raises(UpstreamError) as exc:
        await transport.post_json(up(base_url, "/status/500"), d, PROVIDER)
    assert exc.value.message.startswith("openai/gpt-q: upstream returned 500")


# ---- timeouts and connection failures ---------------------------------------------------------------------


@pytest.mark.parametrize("call", ["stream", "post"])
async def test_slow_first_byte_is_504(transport: HttpTransport, base_url: str, call: str) -> None:
    err = await (stream_error if call == "stream" else post_error)(transport, base_url, "/slow", first_byte=0.2)
    assert err.status == 504
    assert err.code == "upstream_timeout"
    assert err.message == "up-a: upstream timed out"


async def test_post_total_timeout_is_504(transport: HttpTransport, base_url: str) -> None:
    err = await post_error(transport, base_url, "/slow", first_byte=3.0, total=0.2)
    assert err.status == 504
    assert err.code == "upstream_timeout"


@pytest.mark.parametrize("call", ["stream", "post"])
async def test_connection_refused_is_503_unreachable(call: str) -> None:
    url = dead_url()
    t = HttpTransport()
    t.open([url])
    try:
        err = await (stream_error if call == "stream" else post_error)(t, url, "/chat/completions")
    finally:
        await t.close()
    assert err.status == 503
    assert err.code == "upstream_unreachable"
    assert err.message.startswith("up-a: cannot reach upstream: ")


async def test_url_without_open_session_is_runtime_error(transport: HttpTransport, base_url: str) -> None:
    other = "http://127.0.0.2:1/v1"
    with pytest.raises(RuntimeError, match=r"no HTTP session for http://127\.0\.0\.2:1"):
        await transport.post_json(up(other, "/ok"), dep(other), PROVIDER)


# ---- post_json ----------------------------------------------------------------------------------------------


async def test_post_json_returns_body_and_sends_request(transport: HttpTransport, base_url: str) -> None:
    req = UpstreamRequest(f"{base_url}/ok", {"authorization": "Bearer k"}, {"x": [1, "é"]}, {"api-version": "v9"})
    data = await transport.post_json(req, dep(base_url), PROVIDER)
    assert data == {"choices": [], "echo": {"x": [1, "é"]}}
    assert received[0]["headers"]["authorization"] == "Bearer k"
    assert received[0]["query"] == {"api-version": "v9"}


async def test_post_json_invalid_json_is_502(transport: HttpTransport, base_url: str) -> None:
    err = await post_error(transport, base_url, "/json-invalid")
    assert err.status == 502
    assert err.message == "up-a: upstream answered with invalid JSON"


async def test_post_json_non_object_is_502(transport: HttpTransport, base_url: str) -> None:
    err = await post_error(transport, base_url, "/not-a-dict")
    assert err.status == 502
    assert err.message == "up-a: upstream answered with a JSON list"


async def test_open_shares_one_session_per_origin(base_url: str) -> None:
    t = HttpTransport()
    t.open([base_url, base_url + "/other", base_url.replace("/v1", "/v2")])
    try:
        assert len(t._sessions) == 1
    finally:
        await t.close()
    assert t._sessions == {}
