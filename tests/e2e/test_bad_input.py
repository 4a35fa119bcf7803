"""Hostile and broken clients against a real ``portico serve`` (scripted upstream): oversized bodies, deeply nested
JSON, invalid UTF-8, slow-loris headers, 10,000 idle connections, and a streaming client that never reads. Each
answer is the documented status in the error shape of its API; nothing reaches the log as a traceback; slow or
silent clients are cut off by the server's header and write timeouts (server/http_protocol.py) while everyone else
is still answered promptly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from aiohttp import web

from tests.fuzzing import fuzz_config, log_problems, upstream
from tests.support import VENV_BIN, free_port, running

HEADER_TIMEOUT = 2.0
WRITE_TIMEOUT = 2.0
MAX_BODY = 1 << 20
CHAT = {"model": "oai", "messages": [{"role": "user", "content": "hi"}]}


@dataclass
class Server:
    url: str
    pid: int
    log: Path
    flood: Flood


class Flood:
    """An upstream that streams 8 KB chunks for as long as anyone reads them (at most 60 s), and records how many
    bytes it got out and when its reader went away."""

    def __init__(self) -> None:
        self.sent = 0
        self.closed = threading.Event()
        self.started = threading.Event()

    async def handler(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        self.started.set()
        chunk = {"id": "chatcmpl-flood", "object": "chat.completion.chunk", "created": 1, "model": "flood",
                 "choices": [{"index": 0, "delta": {"content": "x" * 8000}, "finish_reason": None}]}  # fmt: skip
        data = b"data: " + orjson.dumps(chunk) + b"\n\n"
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                await resp.write(data)
                self.sent += len(data)
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionError, asyncio.CancelledError):
            self.closed.set()
            raise
        return resp


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def _server(tmp: Path, prefix: tuple[str, ...] = (), **server: float) -> Iterator[Server]:
    flood = Flood()
    up = upstream()
    up.routes.append(web.post("/flood/v1/chat/completions", flood.handler))
    with up.in_thread():
        cfg = fuzz_config(up.url, tmp, auth=False)
        cfg["server"] = {"max_body_bytes": MAX_BODY, **server}
        dep = {"provider": "openai", "model": "flood", "base_url": f"{up.url}/flood/v1", "api_key": "x"}
        cfg["models"].append({"name": "flood", "deployments": [dep]})
        port = free_port()
        (tmp / "bad.yaml").write_text(yaml.safe_dump(cfg))
        cmd = [*prefix, str(VENV_BIN / "portico"), "serve", "--config", str(tmp / "bad.yaml"), "--port", str(port)]
        url = f"http://127.0.0.1:{port}"
        with running(cmd, f"{url}/readyz", tmp / "portico.log") as proc:
            yield Server(url, proc.pid, tmp / "portico.log", flood)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with _server(tmp_path_factory.mktemp("bad-input"), header_timeout=HEADER_TIMEOUT,
                 write_timeout=WRITE_TIMEOUT) as s:  # fmt: skip
        yield s


@pytest.fixture
def clean_log(server: Server) -> Iterator[None]:
    """The test's own stretch of the server log has no traceback or error record."""
    start = server.log.stat().st_size
    yield
    time.sleep(0.3)  # the log is written by a thread
    problems = log_problems(server.log, start)
    assert not problems, f"{len(problems)} tracebacks/errors in the server log, first:\n{problems[0][:3000]}"


def _openai_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    assert r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def _anthropic_error(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, f"{r.status_code} {r.text[:300]}"
    body = r.json()
    assert body["type"] == "error" and body["error"]["message"]
    return body["error"]


# ---- bodies ------------------------------------------------------------------------------------------------------


def test_oversized_bodies_are_413_in_the_error_shape(server: Server, clean_log: None) -> None:
    big = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": "x" * (MAX_BODY + 10)}]})

    def chunked():  # no content-length: the limit must hold while the body streams in
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    json_ct = {"content-type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.post("/v1/knowledge_bases", json={"name": "big"}).status_code == 201
        for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/v1/knowledge_bases/big/documents",
                     "/v1/sql_sources/shop/query"):  # fmt: skip
            err = _openai_error(http.post(path, content=big, headers=json_ct), 413)
            assert err["code"] == "request_too_large", path
            err = _openai_error(http.post(path, content=chunked(), headers=json_ct), 413)
            assert err["code"] == "request_too_large", path
        _anthropic_error(http.post("/v1/messages", content=big, headers=json_ct), 413)
        # Admin bodies have smaller limits of their own (64 KB for keys, 256 KB for decisions).
        r = http.post("/admin/keys", content=orjson.dumps({"name": "k" * 100_000}), headers=json_ct)
        assert _openai_error(r, 413)["code"] == "request_too_large"
        r = http.post("/admin/approvals/apr_x/deny", content=orjson.dumps({"reason": "r" * 300_000}), headers=json_ct)
        assert _openai_error(r, 413)["code"] == "request_too_large"
        # The server is fine afterwards.
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200


def _nested(depth: int, open_: bytes = b'{"a":', close: bytes = b"}") -> bytes:
    return open_ * depth + b"1" + close * depth


@pytest.mark.parametrize("depth", [100, 300, 1000, 100_000])
def test_deeply_nested_json_is_a_400_or_served(server: Server, clean_log: None, depth: int) -> None:
    """Deep JSON anywhere a body takes free-form objects: parsed, refused with a 400, or served — never a 500
    (orjson parses 1024 levels but serialises only 255; Python's own recursion stops near 1000)."""
    nest, arrays = _nested(depth), _nested(depth, b"[", b"]")
    chat = b'{"model":"oai","messages":[{"role":"user","content":"hi"}]'
    bodies = {
        "/v1/chat/completions": [
            chat + b',"tools":[{"type":"function","function":{"name":"f","parameters":' + nest + b"}}]}",
            chat + b',"metadata":' + nest + b"}",
            chat + b',"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":' + nest + b"}}}",
            b'{"model":"oai","messages":' + arrays + b"}",
        ],
        "/v1/responses": [b'{"model":"oai","input":"hi","metadata":' + nest + b"}",
                          b'{"model":"oai","input":' + arrays + b"}"],
        "/v1/messages": [b'{"model":"oai","max_tokens":8,"messages":[{"role":"user","content":"hi"}],'
                         b'"tools":[{"name":"f","input_schema":' + nest + b"}]}"],
        "/v1/embeddings": [b'{"model":"embed","input":' + arrays + b"}"],
        "/v1/knowledge_bases/deep/documents": [b'{"documents":[{"text":"t","metadata":{"m":' + nest + b"}}]}"],
        "/v1/knowledge_bases/deep/search": [b'{"query":"t","filters":' + nest + b"}"],
        "/v1/feedback": [b'{"metric":"helpful","request_id":"r","value":' + nest + b"}"],
        "/admin/handoffs": [b'{"reason":"r","conversation":' + arrays + b"}"],
        "/admin/approvals/apr_x/approve": [b'{"arguments":' + nest + b"}"],
        "/mcp": [b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":' + nest + b"}"],
    }  # fmt: skip
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream"}
    with httpx.Client(base_url=server.url, timeout=60) as http:
        http.post("/v1/knowledge_bases", json={"name": "deep"})
        for path, variants in bodies.items():
            for body in variants:
                r = http.post(path, content=body, headers=headers)
                assert r.status_code < 500, f"{path} depth {depth}: {r.status_code} {r.text[:300]}"
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_invalid_utf8_is_a_400(server: Server, clean_log: None) -> None:
    bad = b'{"model":"oai","messages":[{"role":"user","content":"caf\xe9 \xff\xfe"}]}'
    json_ct = {"content-type": "application/json"}
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for path in ("/v1/chat/completions", "/v1/embeddings", "/v1/responses", "/admin/keys", "/v1/feedback",
                     "/v1/knowledge_bases", "/admin/handoffs"):  # fmt: skip
            err = _openai_error(http.post(path, content=bad, headers=json_ct), 400)
            assert err["code"] == "invalid_json", path
        _anthropic_error(http.post("/v1/messages", content=bad, headers=json_ct), 400)
        r = http.post("/mcp", content=bad, headers={**json_ct, "accept": "application/json, text/event-stream"})
        assert r.status_code == 400 and r.json()["error"]["code"] == -32700
        # In the query string, the path and a header: never a 500.
        for path in ("/admin/requests?q=%ff%fe", "/admin/usage?since=%ff", "/v1/models/%ff%fe",
                     "/v1/knowledge_bases/%ff/search", "/admin/stats?group_by=%c3%28"):  # fmt: skip
            r = http.request("POST" if path.endswith("search") else "GET", path, content=b"{}", headers=json_ct)
            assert r.status_code < 500, f"{path}: {r.status_code} {r.text[:200]}"
            if r.status_code >= 400:
                _openai_error(r, r.status_code)
        r = http.get("/v1/models", headers={"x-request-id": b"\xff\xfe-id", "x-api-key": b"\xc3\x28"})
        assert r.status_code == 200 and len(r.headers["x-request-id"]) == 32  # a fresh id instead


# ---- slow and silent clients -------------------------------------------------------------------------------------


async def _slow_client(port: int, trickle: bool, until: float) -> tuple[float, bytes]:
    """Connect, then send a request's headers a byte every 0.2 s (or nothing): how long until the server hung up,
    and what it said."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = asyncio.ensure_future(reader.read(65536))
    head = b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: " + b"a" * 1000
    i = 0
    try:
        while not got.done() and time.monotonic() < until:
            if trickle and i < len(head):
                writer.write(head[i : i + 1])
                i += 1
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
            await asyncio.wait([got], timeout=0.2)
        data = got.result() if got.done() and not got.exception() else b""
        return (time.monotonic() - t0 if got.done() else float("inf")), data
    finally:
        got.cancel()
        writer.close()


async def test_slow_loris_and_silent_connections_are_cut_off(server: Server, clean_log: None) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    until = time.monotonic() + HEADER_TIMEOUT + 12
    clients = [asyncio.ensure_future(_slow_client(port, i % 2 == 0, until)) for i in range(100)]
    # While 100 connections trickle or say nothing, a normal request is answered promptly.
    await asyncio.sleep(HEADER_TIMEOUT / 2)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        t0 = time.monotonic()
        r = await http.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and time.monotonic() - t0 < 2.0
    results = await asyncio.gather(*clients)
    closed_after = sorted(t for t, _ in results)
    assert all(data == b"" for _, data in results), "a slow client got an answer"
    # Cut off at the header timeout (slack for a loaded machine), not left to hold a socket forever.
    assert closed_after[-1] < HEADER_TIMEOUT + 6, closed_after
    assert closed_after[0] >= HEADER_TIMEOUT - 0.5, closed_after


async def test_a_kept_alive_connection_gets_a_header_deadline_per_request(server: Server, clean_log: None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", int(server.url.rsplit(":", 1)[1]))
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
        await reader.readexactly(length)  # all of it: at_eof() is true only with nothing left to read
        await asyncio.sleep(HEADER_TIMEOUT * 0.75)  # idle between requests: the keep-alive timeout's business
        t0 = time.monotonic()
        for b in b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa":
            if reader.at_eof():
                break
            writer.write(bytes([b]))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            await asyncio.sleep(0.2)
        try:
            rest = await asyncio.wait_for(reader.read(), HEADER_TIMEOUT + 6)
        except ConnectionError:
            rest = b""
        took = time.monotonic() - t0
        assert b"HTTP/1.1" not in rest and HEADER_TIMEOUT - 0.5 <= took < HEADER_TIMEOUT + 6, (took, rest[:200])
    finally:
        writer.close()


def test_a_stream_nobody_reads_is_closed_after_the_write_timeout(server: Server, clean_log: None) -> None:
    """A client that asks for a stream and never reads: the server must not buffer the upstream's output without
    bound, hang other requests, or keep the upstream call open: after ``write_timeout`` with a full buffer it
    closes the connection, which cancels the upstream stream (booked as 499)."""
    flood = server.flood
    rss0 = _rss_kb(server.pid)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the server's buffer fills sooner
    sock.connect(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    body = orjson.dumps({"model": "flood", "stream": True, "messages": [{"role": "user", "content": "go"}]})
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                 b"x-request-id: never-reads\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
    try:
        assert flood.started.wait(10)
        # Others are served while the stream is stuck.
        t0 = time.monotonic()
        assert httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
        assert time.monotonic() - t0 < 2.0
        assert flood.closed.wait(WRITE_TIMEOUT + 20), f"upstream still streaming after {flood.sent} bytes"
        # Backpressure held: the upstream got out only what fits in socket and transport buffers.
        assert flood.sent < 64 * 1024 * 1024, flood.sent
        assert _rss_kb(server.pid) - rss0 < 100 * 1024
        sock.settimeout(5)
        received = b""
        with contextlib.suppress(ConnectionError, TimeoutError):
            while chunk := sock.recv(1 << 20):
                received += chunk
        assert b"[DONE]" not in received and len(received) < flood.sent
    finally:
        sock.close()
    trace = None
    for _ in range(50):
        r = httpx.get(f"{server.url}/admin/requests/never-reads", timeout=10)
        if r.status_code == 200:
            trace = r.json()
            break
        time.sleep(0.2)
    assert trace is not None and trace["status"] == 499, trace


# ---- many idle connections ---------------------------------------------------------------------------------------


def _raise_fd_limit(want: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _open_idle(port: int, n: int) -> list[socket.socket]:
    loop = asyncio.get_running_loop()
    socks: list[socket.socket] = []

    async def one() -> None:
        s = socket.socket()
        s.setblocking(False)
        await loop.sock_connect(s, ("127.0.0.1", port))
        socks.append(s)

    for i in range(0, n, 500):
        await asyncio.gather(*(one() for _ in range(min(500, n - i))))
    return socks


async def test_ten_thousand_idle_connections(tmp_path: Path) -> None:
    """10,000 connections that say nothing: the server holds them all (its fd limit raised by ``serve``) and
    still answers a normal request promptly; once they go, so do their descriptors."""
    target = 10_000
    limit = _raise_fd_limit(target + 1000)
    n = min(target, limit - 500)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # The server starts with the usual soft limit of 1024 descriptors: ``serve`` raises its own to the hard limit.
    low = ("prlimit", f"--nofile=1024:{hard}") if shutil.which("prlimit") else ()
    with _server(tmp_path, low, header_timeout=30.0) as s:
        port = int(s.url.rsplit(":", 1)[1])
        base = _fds(s.pid)
        t0 = time.monotonic()
        socks = await _open_idle(port, n)
        opened_in = time.monotonic() - t0
        try:
            await asyncio.sleep(1)
            held = _fds(s.pid) - base
            async with httpx.AsyncClient(base_url=s.url, timeout=10) as http:
                t1 = time.monotonic()
                r = await http.post("/v1/chat/completions", json=CHAT)
                latency = time.monotonic() - t1
            print(f"idle connections: opened {len(socks)} in {opened_in:.1f} s, server holds {held}, "
                  f"a chat completion meanwhile took {latency * 1000:.0f} ms (fd limit here {limit})")  # fmt: skip
            assert len(socks) == n and n >= min(target, 4000)
            assert held >= 0.98 * n
            assert r.status_code == 200 and latency < 2.0
        finally:
            for sock in socks:
                sock.close()
        deadline = time.monotonic() + 20
        while _fds(s.pid) - base > 50 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert _fds(s.pid) - base <= 50
