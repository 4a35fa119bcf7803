"""``portico serve --workers 2``: one scrape of ``/metrics`` (answered by whichever worker accepts it) reports the
requests of both workers. The serve command makes the prometheus-client multiprocess directory and removes it at
shutdown."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from portico.observability.metrics import MULTIPROC_ENV, multiprocess_dir
from tests.support import VENV_BIN, free_port, running

REDIS_DB = 11
MAX_REQUESTS = 300


def _sum(families, family: str, sample: str, model: str = "m") -> float:
    """A sample summed over every label set of one model (keys, endpoints, statuses…)."""
    return sum(
        s.value
        for f in families
        if f.name == family
        for s in f.samples
        if s.name == sample and s.labels.get("model") == model
    )


def _requests_total(families) -> float:
    return _sum(families, "portico_requests", "portico_requests_total")


def _per_worker(metrics_dir: Path) -> dict[str, float]:
    """Requests counted in each worker's own file (prometheus-client names them counter_<pid>.db)."""
    out = {}
    for f in sorted(metrics_dir.glob("counter_*.db")):
        out[f.stem.removeprefix("counter_")] = _requests_total(MultiProcessCollector.merge([str(f)]))
    return out


def test_one_scrape_reports_every_worker(katan: str, tmp_path: Path) -> None:
    r = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB)
    r.flushdb()
    cfg = {
        "state_dir": str(tmp_path / "state"),
        "state": f"redis://127.0.0.1:6379/{REDIS_DB}",
        "models": [{"name": "m", "deployments": [
            {"provider": "openai", "model": "echo", "base_url": f"{katan}/v1", "api_key": "sk"}]}],
    }  # fmt: skip
    path = tmp_path / "portico.yaml"
    path.write_text(yaml.safe_dump(cfg))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "portico.log"
    cmd = [str(VENV_BIN / "portico"), "serve", "--config", str(path), "--port", str(port), "--workers", "2"]
    body = {"model": "m", "messages": [{"role": "user", "content": "count me"}], "max_tokens": 5}
    try:
        with running(cmd, f"{url}/readyz", log, timeout=120):
            found = re.search(r"merged through (\S+)", log.read_text())
            assert found, log.read_text()
            metrics_dir = Path(found.group(1))
            assert metrics_dir.is_dir()
            sent = 0
            # A new connection per request, so the kernel spreads them over both workers' accept queues.
            while sent < MAX_REQUESTS:
                resp = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
                assert resp.status_code == 200, resp.text
                sent += 1
                if sent % 10 == 0 and sum(1 for v in _per_worker(metrics_dir).values() if v > 0) >= 2:
                    break
            per_worker = _per_worker(metrics_dir)
            assert sum(1 for v in per_worker.values() if v > 0) == 2, f"one worker served all {sent}: {per_worker}"
            assert sum(per_worker.values()) == sent
            # Several scrapes, each answered by either worker: every one sees all requests of both.
            for _ in range(6):
                scrape = httpx.get(f"{url}/metrics", timeout=10)
                assert scrape.status_code == 200
                families = list(text_string_to_metric_families(scrape.text))
                assert _requests_total(families) == sent
                assert _sum(families, "portico_request_seconds", "portico_request_seconds_count") == sent
        # serve removed its directory on shutdown.
        deadline = time.monotonic() + 10
        while metrics_dir.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not metrics_dir.exists()
    finally:
        r.flushdb()


def test_one_worker_keeps_in_process_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    with multiprocess_dir(1) as d:
        assert d is None


def test_operator_directory_is_emptied_not_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "keep.txt").write_text("not ours")
    monkeypatch.setenv(MULTIPROC_ENV, str(given))
    with multiprocess_dir(2) as d:
        assert d == given and not (given / "counter_123.db").exists()
    assert given.is_dir() and (given / "keep.txt").exists()
