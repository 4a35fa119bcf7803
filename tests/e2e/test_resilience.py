"""Reliability of one replica against its dependencies, for real: a private Redis and a private PostgreSQL that
these tests kill and restart, Portico with ``--workers 2`` killed with SIGKILL and stopped with SIGTERM.

- Redis down: ``state_outage: open`` answers without limits and bypasses the cache; ``closed`` answers 503 in
  OpenAI's error shape; both recover without a restart.
- PostgreSQL down: requests are answered; usage rows wait in a bounded queue and are written after recovery; what
  does not fit is counted in ``portico_usage_dropped_total``.
- SIGKILL: every answered request's usage row is in the database after a restart (the spool).
- SIGTERM: streams in flight run to their end, new connections are refused, queued rows are flushed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import openai
import pytest
import yaml

from tests.private_services import PrivatePostgres, PrivateRedis, private_postgres, private_redis
from tests.support import VENV_BIN, free_port, wait_http

MASTER = "mk-" + "r" * 40


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as p:
        yield p


@pytest.fixture(scope="module")
def rds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path_factory.mktemp("redis")) as r:
        yield r


class Replica:
    """``portico serve --workers 2`` that a test can SIGKILL, SIGTERM and start again on the same state_dir."""

    def __init__(self, cfg: dict, tmp: Path, name: str) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cfg_path = tmp / f"{name}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(cfg))
        self.log = tmp / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        cmd = [str(VENV_BIN / "portico"), "serve", "--config", str(self.cfg_path), "--port", str(self.port),
               "--workers", "2"]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        try:
            wait_http(f"{self.url}/readyz", self.proc, 90)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.log.read_text(errors='replace')[-3000:]}") from None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def metric(self, name: str) -> float:
        text = httpx.get(f"{self.url}/metrics", headers={"authorization": f"Bearer {MASTER}"}, timeout=10).text
        return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def _cfg(tmp: Path, name: str, katan: str, slow_katan: str, pg: PrivatePostgres, rds: PrivateRedis, **over) -> dict:
    dep = {"provider": "openai", "model": "echo", "api_key": "sk", "price": {"input": 1.0, "output": 2.0}}
    cfg = {
        "state_dir": str(tmp / f"{name}-state"),
        "state": rds.url,
        "auth": {"master_key": MASTER},
        "storage": {"url": pg.url.rsplit("/", 1)[0] + f"/{name}", "usage_flush_seconds": 0.2},
        "cache": {"backend": "redis", "scope": "global"},
        "logging": {"level": "INFO"},
        "models": [
            {"name": "m", "deployments": [{**dep, "base_url": f"{katan}/v1"}]},
            {"name": "slow", "deployments": [{**dep, "base_url": f"{slow_katan}/v1"}]},
        ],
    }
    for k, v in over.items():
        cfg[k] = {**cfg[k], **v} if isinstance(v, dict) and isinstance(cfg.get(k), dict) else v
    return cfg


async def _create_db(pg: PrivatePostgres, name: str) -> None:
    conn = await asyncpg.connect(pg.url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _usage_ids(pg: PrivatePostgres, name: str, status: int | None = None) -> set[str]:
    conn = await asyncpg.connect(pg.url.rsplit("/", 1)[0] + f"/{name}")
    try:
        q = "SELECT request_id FROM usage" + (" WHERE status = $1" if status else "")
        return {r[0] for r in await conn.fetch(q, *([status] if status else []))}
    finally:
        await conn.close()


def _key(url: str, **fields) -> str:
    r = httpx.post(url + "/admin/keys", headers={"authorization": f"Bearer {MASTER}"},
                   json={"name": f"k-{uuid.uuid4().hex[:6]}", **fields}, timeout=10)  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()["key"]


def _client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30)


def _ask(client: openai.OpenAI, text: str = "hello", model: str = "m"):
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=0
    )


@pytest.fixture(scope="module")
def open_replica(katan: str, slow_katan: str, pg: PrivatePostgres, rds: PrivateRedis,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("open")
    asyncio.run(_create_db(pg, "open"))
    rep = Replica(_cfg(tmp, "open", katan, slow_katan, pg, rds, storage={"usage_max_queue": 20}), tmp, "open")
    rep.start()
    yield rep
    rep.stop()


@pytest.fixture(scope="module")
def closed_replica(katan: str, slow_katan: str, pg: PrivatePostgres, rds: PrivateRedis,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:  # fmt: skip
    tmp = tmp_path_factory.mktemp("closed")
    asyncio.run(_create_db(pg, "closed"))
    # Rows are flushed every 60 s only: what the database holds after a kill came from the spool.
    cfg = _cfg(tmp, "closed", katan, slow_katan, pg, rds, state_outage="closed",
               storage={"usage_flush_seconds": 60.0}, server={"drain_seconds": 20})  # fmt: skip
    rep = Replica(cfg, tmp, "closed")
    rep.start()
    yield rep
    rep.stop()


def test_redis_outage_policies_and_recovery(open_replica: Replica, closed_replica: Replica, rds: PrivateRedis) -> None:
    keys = {r: _key(r.url, rpm=3) for r in (open_replica, closed_replica)}
    for rep in (open_replica, closed_replica):
        c = _client(rep.url, keys[rep])
        assert _ask(c, f"warm {rep.port}").headers["x-portico-cache"] == "miss"
        assert _ask(c, f"warm {rep.port}").headers["x-portico-cache"] == "hit"
    rds.kill()
    try:
        # open: answered, without the limit (rpm 3 is long spent) and without the cache
        c = _client(open_replica.url, keys[open_replica])
        for _ in range(5):
            r = _ask(c, f"warm {open_replica.port}")
            assert r.http_response.status_code == 200
            assert r.headers["x-portico-cache"] == "bypass"
        assert open_replica.metric("portico_state_unavailable_total") >= 5
        # keys can still be created (the change is in the database; the notice to other workers is skipped)
        new_key = _key(open_replica.url)
        for _ in range(4):  # both workers: one created it, the other finds it in the database
            assert _ask(_client(open_replica.url, new_key)).http_response.status_code == 200
        # closed: a documented 503 in OpenAI's shape, with Retry-After
        c = _client(closed_replica.url, keys[closed_replica])
        with pytest.raises(openai.APIStatusError) as e:
            _ask(c, "during outage")
        assert e.value.status_code == 503
        assert e.value.body["code"] == "state_unavailable" and e.value.body["type"] == "service_unavailable"
        assert e.value.response.headers["retry-after"] == "1"
    finally:
        rds.start()
    # recovery without a restart: limits and the cache work again (the counters went with Redis's memory)
    for rep in (open_replica, closed_replica):
        c = _client(rep.url, _key(rep.url, rpm=2))
        deadline = time.monotonic() + 10
        while True:
            try:
                first = _ask(c, f"after {rep.port}")
                break
            except openai.APIStatusError:
                assert time.monotonic() < deadline, "no recovery after Redis came back"
                time.sleep(0.2)
        assert first.headers["x-portico-cache"] == "miss"
        assert _ask(c, f"after {rep.port}").headers["x-portico-cache"] == "hit"
        with pytest.raises(openai.RateLimitError):
            _ask(c)


def test_postgres_outage_buffers_usage_and_counts_overflow(open_replica: Replica, pg: PrivatePostgres) -> None:
    c = _client(open_replica.url, _key(open_replica.url))
    before = {_ask(c, "before").headers["x-request-id"] for _ in range(4)}  # both workers know the key
    deadline = time.monotonic() + 10
    while not before <= asyncio.run(_usage_ids(pg, "open")):  # nothing queued when the database goes
        assert time.monotonic() < deadline
        time.sleep(0.2)
    dropped0 = open_replica.metric("portico_usage_dropped_total")
    pg.stop()
    answered = []
    try:
        for i in range(26):  # the queue holds 20 per worker: with 2 workers, some overflow unless evenly split
            r = _ask(c, f"pg down {i}")
            assert r.http_response.status_code == 200
            answered.append(r.headers["x-request-id"])
        time.sleep(1.0)
    finally:
        pg.start()
    dropped = open_replica.metric("portico_usage_dropped_total") - dropped0
    deadline = time.monotonic() + 15
    while True:
        stored = asyncio.run(_usage_ids(pg, "open")) & set(answered)
        if len(stored) + dropped >= len(answered) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    # every answered request is either stored after recovery or counted as dropped: never a silent loss
    assert len(stored) + dropped == len(answered), (len(stored), dropped)
    assert len(stored) >= 20  # at least one worker's full queue


def test_sigkill_loses_no_usage_row_of_an_answered_request(closed_replica: Replica, pg: PrivatePostgres) -> None:
    c = _client(closed_replica.url, _key(closed_replica.url))
    answered = [_ask(c, f"kill {i}").headers["x-request-id"] for i in range(30)]
    assert not (asyncio.run(_usage_ids(pg, "closed")) & set(answered))  # nothing flushed yet (60 s interval)
    closed_replica.signal(signal.SIGKILL)
    closed_replica.wait()
    closed_replica.start()  # the new processes insert what the spool holds
    assert set(answered) <= asyncio.run(_usage_ids(pg, "closed", 200))


def test_sigterm_finishes_streams_in_flight_and_flushes(closed_replica: Replica, pg: PrivatePostgres) -> None:
    key = _key(closed_replica.url)

    async def stream(i: int) -> tuple[str, int, bool]:
        client = openai.AsyncOpenAI(base_url=f"{closed_replica.url}/v1", api_key=key, max_retries=0, timeout=60)
        raw = await client.chat.completions.with_raw_response.create(
            model="slow", messages=[{"role": "user", "content": f"one two three four five six {i}"}], stream=True,
            max_tokens=12,
        )  # fmt: skip
        chunks, finished = 0, False
        async for ch in raw.parse():
            chunks += 1
            finished = finished or bool(ch.choices and ch.choices[0].finish_reason)
        return raw.headers["x-request-id"], chunks, finished

    async def scenario() -> list[tuple[str, int, bool]]:
        tasks = [asyncio.create_task(stream(i)) for i in range(6)]
        await asyncio.sleep(1.0)  # every stream has started (first chunks out), none is done (300 ms a token)
        assert not any(t.done() for t in tasks)
        closed_replica.signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            async with httpx.AsyncClient() as h:
                await h.get(f"{closed_replica.url}/healthz")
        return await asyncio.gather(*tasks)

    results = asyncio.run(scenario())
    assert all(finished and chunks > 3 for _, chunks, finished in results), results
    assert closed_replica.wait(30) == 0
    # rows are flushed every 60 s in this config: these were written by the shutdown flush
    assert {rid for rid, _, _ in results} <= asyncio.run(_usage_ids(pg, "closed", 200))
    closed_replica.start()  # the module's fixture stops it again
