"""Helpers for starting real processes in tests: free ports, waiting for health, clean teardown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import yaml

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, ok=(200,)) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            r = httpx.get(url, timeout=2)
            if r.status_code in ok:
                return
            last = f"{r.status_code} {r.text[:300]}"
        except httpx.HTTPError as e:
            last = repr(e)
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


@contextlib.contextmanager
def running(cmd: list[str], health_url: str, log_path: Path, timeout: float = 60.0) -> Iterator[subprocess.Popen]:
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            try:
                wait_http(health_url, proc, timeout)
            except RuntimeError as e:
                raise RuntimeError(
                    f"{e}\n--- log of {cmd[0]} ---\n{log_path.read_text(errors='replace')[-4000:]}"
                ) from None
            yield proc
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def katan_cmd(port: int, tmp: Path, *extra: str) -> list[str]:
    return [
        str(VENV_BIN / "llm-katan"),
        "--model",
        "echo",
        "--backend",
        "echo",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--providers",
        "openai,anthropic,vertexai,azure_openai",
        "--disable-dashboard",
        "--stats-file",
        str(tmp / f"katan-{port}.json"),
        "--log-level",
        "WARNING",
        *extra,
    ]


@contextlib.contextmanager
def portico_server(
    cfg: dict, tmp: Path, *, port: int | None = None, log: str = "portico.log", timeout: float = 60.0
) -> Iterator[str]:
    """A real ``portico serve`` with this config (written to ``tmp`` as YAML), ready when ``/readyz`` is 200;
    yields its URL. Pass ``port`` when the config must name the server's own address."""
    port = port or free_port()
    path = tmp / f"{Path(log).stem}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    url = f"http://127.0.0.1:{port}"
    cmd = [str(VENV_BIN / "portico"), "serve", "--config", str(path), "--port", str(port)]
    with running(cmd, f"{url}/readyz", tmp / log, timeout=timeout):
        yield url
