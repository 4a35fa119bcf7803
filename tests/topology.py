"""The scale-out topology as real processes: nginx in front of Portico replicas (each ``serve --workers 2``), one
private Redis, one private PostgreSQL, llm-katan upstreams, and wrk as the load generator. Used by
tests/e2e/test_scale_topology.py (short) and bench/scale.py (full, with faults and a soak).

nginx keeps no idle connections to the replicas: a POST sent on a kept-alive connection that the replica closes
at that moment cannot be retried safely (nginx cannot know whether it ran), while a refused connection can be.
``proxy_next_upstream error timeout`` without ``non_idempotent`` retries exactly those: a request that reached no
replica, never one that may have run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
import yaml

from tests.private_services import PrivatePostgres, PrivateRedis
from tests.support import VENV_BIN, free_port, katan_cmd, wait_http

MASTER = "mk-" + "t" * 40
PRICE = {"input": 1.0, "output": 2.0}  # USD per 1M tokens

WRK_SCRIPT = r"""
local counter = 0
local f = nil
local key = os.getenv("SCALE_KEY")
local model = os.getenv("SCALE_MODEL") or "m"
local same = os.getenv("SCALE_SAME")
local run = os.getenv("SCALE_RUN") or "r"
local logdir = os.getenv("SCALE_LOGDIR")
local n = 0
function setup(thread)
  n = n + 1
  thread:set("tid", n)
end
function init(args)
  f = io.open(logdir .. "/wrk-" .. run .. "-" .. tid .. ".log", "w")
  f:setvbuf("line")
end
function request()
  counter = counter + 1
  local content = same or ("question " .. run .. " " .. tid .. " " .. counter)
  local body = '{"model":"' .. model .. '","temperature":0,"max_tokens":16,' ..
    '"messages":[{"role":"user","content":"' .. content .. '"}]}'
  return wrk.format("POST", "/v1/chat/completions",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}, body)
end
function response(status, headers, body)
  f:write(status, " ", headers["x-request-id"] or "-", "\n")
end
"""

NGINX_CONF = """
worker_processes 1;
error_log {dir}/nginx-error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  log_format timing '$msec $request_time $status "$upstream_addr" "$upstream_status"';
  upstream one {{ server 127.0.0.1:{p0} max_fails=1 fail_timeout=2s; }}
  upstream all {{
{servers}
  }}
  proxy_http_version 1.1;
  proxy_buffering off;            # streams pass through as they are produced
  proxy_read_timeout 120s;
  proxy_next_upstream error timeout;   # a request that reached no replica; never a POST that may have run
  proxy_next_upstream_tries 3;
  server {{
    listen 127.0.0.1:{port_all};
    access_log {dir}/access.log timing;
    location / {{ proxy_pass http://all; }}
  }}
  server {{
    listen 127.0.0.1:{port_one};
    location / {{ proxy_pass http://one; }}
  }}
}}
"""


class Replica:
    def __init__(self, name: str, cfg: dict, root: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cfg_path = root / f"{name}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(cfg))
        self.log = root / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> None:
        cmd = [str(VENV_BIN / "portico"), "serve", "--config", str(self.cfg_path), "--port", str(self.port),
               "--workers", "2"]  # fmt: skip
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 180) -> None:
        assert self.proc is not None
        try:
            wait_http(f"{self.url}/readyz", self.proc, timeout)
        except RuntimeError as e:
            raise RuntimeError(f"{e}\n{self.log.read_text(errors='replace')[-3000:]}") from None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def sigterm_and_wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)  # the supervisor only, as an orchestrator does; it stops its workers
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def pids(self) -> list[int]:
        """The supervisor and its workers."""
        import psutil

        if self.proc is None or self.proc.poll() is not None:
            return []
        with contextlib.suppress(psutil.NoSuchProcess):
            p = psutil.Process(self.proc.pid)
            return [p.pid, *(c.pid for c in p.children(recursive=True))]
        return []


@dataclass
class WrkResult:
    statuses: dict[int, int]
    ok_ids: list[str]
    rps: float
    p50_ms: float
    p99_ms: float
    socket_errors: int
    started: float
    ended: float
    raw: str = field(repr=False, default="")

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        """Client-visible failures: 5xx answers and requests that got no answer (socket errors)."""
        return sum(n for s, n in self.statuses.items() if s >= 500) + self.socket_errors


def _ms(value: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v * 60000 if unit == "m" else v


class Topology:
    def __init__(self, replicas: int = 2, *, semantic: bool = False, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="portico-scale-"))
        self.n = replicas
        self.semantic = semantic
        self.redis = PrivateRedis(self.root / "redis")
        self.pg = PrivatePostgres()
        self.db_url = self.pg.url.rsplit("/", 1)[0] + "/portico"
        self.katans: dict[str, tuple[subprocess.Popen, str]] = {}
        self.replicas: list[Replica] = []
        self.nginx: subprocess.Popen | None = None
        self.port_all = free_port()
        self.port_one = free_port()
        self.url = f"http://127.0.0.1:{self.port_all}"
        self.url_one = f"http://127.0.0.1:{self.port_one}"
        (self.root / "wrk").mkdir(parents=True, exist_ok=True)
        (self.root / "wrk.lua").write_text(WRK_SCRIPT)

    # --- processes -------------------------------------------------------------------------------------------

    def _katan(self, name: str, *extra: str) -> str:
        port = free_port()
        d = self.root / f"katan-{name}"
        d.mkdir(exist_ok=True)
        log = open(d / "katan.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(katan_cmd(port, d, "--max-concurrent", "64", *extra), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/health", proc, 60)
        self.katans[name] = (proc, url)
        return url

    def config(self, name: str) -> dict:
        ok, good, bad = (self.katans[k][1] for k in ("ok", "good", "bad"))
        dep = {"provider": "openai", "model": "echo", "api_key": "sk", "price": PRICE}
        models: list[dict] = [
            {"name": "m", "deployments": [{**dep, "base_url": f"{ok}/v1"}]},
            {"name": "brown", "retries": {"max": 1, "backoff": 0.05}, "circuit_breaker": {"failures": 3, "cooldown": 5},
             "deployments": [{**dep, "base_url": f"{good}/v1", "timeouts": {"first_byte": 2, "total": 5}},
                             {**dep, "base_url": f"{bad}/v1", "timeouts": {"first_byte": 2, "total": 5}}]},
        ]  # fmt: skip
        cfg: dict = {
            "state_dir": str(self.root / f"{name}-state"),
            "state": self.redis.url,
            "auth": {"master_key": MASTER},
            "storage": {"url": self.db_url},
            "cache": {"backend": "redis", "scope": "key"},
            "logging": {"level": "WARNING"},
            "models": models,
        }
        if self.semantic:
            models.append({"name": "local-embed", "type": "embedding", "deployments": [{"provider": "local"}]})
            cfg["applications"] = [{"name": "faq", "model": "m", "steps": [
                {"use": "semantic_cache", "store": "redis", "min_similarity": 0.9}]}]  # fmt: skip
        return cfg

    def start(self) -> None:
        self.redis.start()
        self.pg.init()
        self.pg.start()
        asyncio.run(_sql(self.pg.url, 'CREATE DATABASE "portico"'))
        self._katan("ok")
        self._katan("good")
        self._katan("bad", "--error-rate", "0.5", "--latency-ms", "300")
        self.replicas = [Replica(f"replica{i}", self.config(f"replica{i}"), self.root) for i in range(self.n)]
        for r in self.replicas:
            r.start(wait=False)
        for r in self.replicas:
            r.wait_ready()
        self._nginx()

    def _nginx(self) -> None:
        d = self.root / "nginx"
        d.mkdir(exist_ok=True)
        servers = "\n".join(f"    server 127.0.0.1:{r.port} max_fails=1 fail_timeout=2s;" for r in self.replicas)
        conf = NGINX_CONF.format(dir=d, p0=self.replicas[0].port, servers=servers, port_all=self.port_all,
                                 port_one=self.port_one)  # fmt: skip
        (d / "nginx.conf").write_text(conf)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.nginx = subprocess.Popen([nginx, "-c", str(d / "nginx.conf"), "-p", str(d), "-g", "daemon off;"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        wait_http(f"{self.url}/healthz", self.nginx, 30)

    def close(self) -> None:
        for r in self.replicas:
            r.stop()
        if self.nginx is not None:
            self.nginx.terminate()
            self.nginx.wait(10)
        for proc, _ in self.katans.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self.redis.kill()
        self.pg.destroy()

    # --- admin and data --------------------------------------------------------------------------------------

    def admin(self, method: str, path: str, url: str | None = None, **kw) -> httpx.Response:
        return httpx.request(method, (url or self.url) + path, headers={"authorization": f"Bearer {MASTER}"},
                             timeout=30, **kw)  # fmt: skip

    def key(self, url: str | None = None, name: str | None = None, **fields) -> str:
        r = self.admin("POST", "/admin/keys", url, json={"name": name or f"k-{uuid.uuid4().hex[:8]}", **fields})
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def usage_rows(self, where: str = "", *args) -> list:
        return asyncio.run(_fetch(self.db_url, f"SELECT request_id, status, key_name, prompt_tokens, "
                                               f"completion_tokens, cost_usd FROM usage {where}", *args))  # fmt: skip

    # --- load ------------------------------------------------------------------------------------------------

    def wrk(self, key: str, seconds: float, **kw) -> WrkResult:
        return self.wrk_stop(self.wrk_start(key, seconds, **kw))

    def wrk_start(self, key: str, seconds: float, *, url: str | None = None, connections: int = 16,
                  threads: int = 2, model: str = "m", same: str | None = None) -> tuple:  # fmt: skip
        """wrk in the background for ``seconds`` (or until ``wrk_stop(..., interrupt=True)``)."""
        run = uuid.uuid4().hex[:8]
        env = {**os.environ, "SCALE_KEY": key, "SCALE_MODEL": model, "SCALE_RUN": run,
               "SCALE_LOGDIR": str(self.root / "wrk")}  # fmt: skip
        if same is not None:
            env["SCALE_SAME"] = same
        cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--latency",
               "--timeout", "60s", "-s", str(self.root / "wrk.lua"), url or self.url]  # fmt: skip
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return proc, run, time.time()

    def wrk_stop(self, handle: tuple, interrupt: bool = False) -> WrkResult:
        proc, run, started = handle
        if interrupt:
            proc.send_signal(signal.SIGINT)  # wrk stops and reports what it measured
        out, err = proc.communicate()
        ended = time.time()
        if proc.returncode not in (0, -signal.SIGINT):
            raise RuntimeError(f"wrk failed ({proc.returncode}): {err}")
        statuses: dict[int, int] = {}
        ok: list[str] = []
        for f in (self.root / "wrk").glob(f"wrk-{run}-*.log"):
            for line in f.read_text().splitlines():
                status, rid = line.split(" ", 1)
                statuses[int(status)] = statuses.get(int(status), 0) + 1
                if status == "200":
                    ok.append(rid)
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        rps = float(m.group(1)) if m else sum(statuses.values()) / max(1e-9, ended - started)
        p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
        p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
        errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        # read/write errors and timeouts are requests that got no answer (connect errors: none was sent)
        socket_errors = sum(int(x) for x in errs.groups()[1:]) if errs else 0
        return WrkResult(statuses, ok, rps, _ms(p50.group(1)) if p50 else float("nan"),
                         _ms(p99.group(1)) if p99 else float("nan"), socket_errors, started, ended, out)  # fmt: skip

    def access_log(self) -> list[tuple[float, float, int, str]]:
        """(start, end, status, first upstream) of each request through the 'all' port."""
        out = []
        path = self.root / "nginx" / "access.log"
        if not path.exists():
            return out
        for line in path.read_text().splitlines():
            m = re.match(r'(\S+) (\S+) (\d+) "([^"]*)"', line)
            if m:
                end, dur = float(m.group(1)), float(m.group(2))
                out.append((end - dur, end, int(m.group(3)), m.group(4).split(",")[0].strip()))
        return out


async def _sql(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _fetch(url: str, query: str, *args) -> list:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()
