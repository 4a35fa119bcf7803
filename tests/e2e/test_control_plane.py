"""Virtual keys, access, rate limits, budgets and cost, against a real Portico process with a master key
and llm-katan as the upstream; the official openai SDK as the client."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from tests.support import VENV_BIN, free_port, running

MASTER = "mk-" + "m" * 40
PRICE = {"input": 1000.0, "output": 2000.0}  # USD per 1M tokens: large, so costs are visible


@pytest.fixture(scope="module")
def server(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("control")
    port = free_port()
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "models": [
            {"name": "priced", "deployments": [{"provider": "openai", "model": "echo", "base_url": f"{katan}/v1",
                                                "api_key": "sk-upstream-secret", "price": PRICE}]},
            {"name": "other", "deployments": [{"provider": "anthropic", "model": "echo", "base_url": katan,
                                               "api_key": "sk-upstream-secret"}]},
        ],
    }  # fmt: skip
    path = tmp / "portico.yaml"
    path.write_text(yaml.safe_dump(cfg))
    url = f"http://127.0.0.1:{port}"
    cmd = [str(VENV_BIN / "portico"), "serve", "--config", str(path), "--port", str(port)]
    with running(cmd, f"{url}/readyz", tmp / "portico.log"):
        yield {"url": url, "log": tmp / "portico.log", "db": tmp / "state" / "portico.db"}


def admin(server: dict, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, server["url"] + path, headers={"authorization": f"Bearer {MASTER}"}, timeout=30, **kw)


def new_key(server: dict, **fields) -> tuple[str, str]:
    r = admin(server, "POST", "/admin/keys", json={"name": f"t-{time.monotonic_ns()}", **fields})
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


def sdk(server: dict, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=key, max_retries=0, timeout=30)


HI = [{"role": "user", "content": "hello there"}]


def test_requests_need_a_key_when_auth_is_on(server: dict) -> None:
    with pytest.raises(openai.AuthenticationError) as ei:
        sdk(server, "pk-not-a-real-key").chat.completions.create(model="priced", messages=HI)
    assert ei.value.body["code"] == "invalid_api_key"
    r = httpx.post(server["url"] + "/v1/chat/completions", json={"model": "priced", "messages": HI})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


def test_key_works_in_every_header_style(server: dict) -> None:
    _, key = new_key(server)
    assert sdk(server, key).chat.completions.create(model="priced", messages=HI).choices[0].message.content
    for header in ("api-key", "x-api-key"):
        r = httpx.post(server["url"] + "/v1/chat/completions", headers={header: key},
                       json={"model": "priced", "messages": HI})  # fmt: skip
        assert r.status_code == 200, r.text


def test_admin_api_needs_the_master_key(server: dict) -> None:
    _, key = new_key(server)
    assert httpx.get(server["url"] + "/admin/keys").status_code == 401
    r = httpx.get(server["url"] + "/admin/keys", headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 403


def test_key_is_shown_once_and_only_its_hash_is_stored(server: dict) -> None:
    key_id, key = new_key(server)
    listed = admin(server, "GET", "/admin/keys").json()["data"]
    assert key not in str(listed) and any(k["id"] == key_id for k in listed)
    assert key not in str(admin(server, "GET", f"/admin/keys/{key_id}").json())
    with sqlite3.connect(server["db"]) as db:
        dump = "\n".join(db.iterdump())
    assert key not in dump and key_id in dump


def test_revoked_key_stops_at_once(server: dict) -> None:
    key_id, key = new_key(server)
    client = sdk(server, key)
    client.chat.completions.create(model="priced", messages=HI)
    assert admin(server, "DELETE", f"/admin/keys/{key_id}").json()["active"] is False
    with pytest.raises(openai.AuthenticationError) as ei:
        client.chat.completions.create(model="priced", messages=HI)
    assert ei.value.body["code"] == "revoked_api_key"


def test_model_access_list(server: dict) -> None:
    key_id, key = new_key(server, models=["priced"])
    client = sdk(server, key)
    client.chat.completions.create(model="priced", messages=HI)
    with pytest.raises(openai.PermissionDeniedError) as ei:
        client.chat.completions.create(model="other", messages=HI)
    assert ei.value.body["code"] == "model_not_allowed"
    # Widening the list applies immediately.
    assert admin(server, "PATCH", f"/admin/keys/{key_id}", json={"models": ["priced", "other"]}).status_code == 200
    client.chat.completions.create(model="other", messages=HI)
    r = admin(server, "POST", "/admin/keys", json={"name": "bad", "models": ["nope"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "models[0]"


async def _burst(server: dict, key: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as http:
        return await asyncio.gather(*(
            http.post(server["url"] + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                      json={"model": "priced", "messages": HI})
            for _ in range(n)
        ))  # fmt: skip


def test_rpm_limit_holds_under_concurrency(server: dict) -> None:
    _, key = new_key(server, rpm=5)
    responses = asyncio.run(_burst(server, key, 20))
    ok = [r for r in responses if r.status_code == 200]
    limited = [r for r in responses if r.status_code == 429]
    assert len(ok) == 5 and len(limited) == 15
    r = limited[0]
    assert int(r.headers["retry-after"]) >= 1
    assert r.headers["x-ratelimit-limit-requests"] == "5" and r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert ok[0].headers["x-ratelimit-limit-requests"] == "5"


def test_tpm_limit_overshoots_by_at_most_one_request(server: dict) -> None:
    _, key = new_key(server, tpm=60)
    total, served = 0, 0
    for _ in range(30):
        r = httpx.post(server["url"] + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                       json={"model": "priced", "messages": HI}, timeout=30)  # fmt: skip
        if r.status_code == 429:
            assert "tokens per minute" in r.json()["error"]["message"]
            break
        assert r.status_code == 200
        served += 1
        total += r.json()["usage"]["total_tokens"]
    else:
        pytest.fail("the token limit never applied")
    per_request = total / served
    assert total >= 60 and total < 60 + per_request + 1  # the last admitted request may cross the line


def test_budget_is_enforced_after_it_is_spent(server: dict) -> None:
    # One echo call costs ~ (2 prompt * 1000 + 10 completion * 2000) / 1e6 ≈ 0.02 USD at the test price.
    _, key = new_key(server, budget_usd=0.03, budget_period="day")
    client = sdk(server, key)
    codes = []
    for _ in range(6):
        try:
            client.chat.completions.create(model="priced", messages=HI)
            codes.append(200)
        except openai.RateLimitError as e:
            codes.append(429)
            assert e.body["code"] == "insufficient_quota"
    assert codes[:2] == [200, 200] and codes[-1] == 429 and codes.count(200) == 2


def test_usage_and_cost_are_recorded(server: dict) -> None:
    key_id, key = new_key(server)
    client = sdk(server, key)
    plain = client.chat.completions.create(model="priced", messages=HI)
    streamed = list(client.chat.completions.create(model="priced", messages=HI, stream=True))
    assert streamed
    rows = admin(server, "GET", "/admin/usage", params={"group_by": "key,model", "key_id": key_id}).json()["data"]
    assert len(rows) == 1
    row = rows[0]
    assert row["requests"] == 2 and row["errors"] == 0 and row["model"] == "priced"
    u = plain.usage
    one = (u.prompt_tokens * PRICE["input"] + u.completion_tokens * PRICE["output"]) / 1e6
    assert row["prompt_tokens"] >= u.prompt_tokens * 2 - 1
    assert row["cost_usd"] == pytest.approx(2 * one, rel=0.25)  # the stream's echo text differs slightly
    day = admin(server, "GET", "/admin/usage", params={"group_by": "day", "since": "2020-01-01T00:00:00Z"}).json()
    assert day["data"][0]["day"] == time.strftime("%Y-%m-%d", time.gmtime())
    assert admin(server, "GET", "/admin/usage", params={"group_by": "colour"}).status_code == 400


def test_cli_creates_lists_and_revokes_keys(server: dict) -> None:
    env = {"PORTICO_MASTER_KEY": MASTER, "PATH": str(VENV_BIN)}
    portico = str(VENV_BIN / "portico")
    out = subprocess.run(
        [portico, "keys", "create", "--name", "cli-team", "--models", "priced", "--rpm", "100", "--url", server["url"]],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    key = next(w for w in out.split() if w.startswith("pk-") and not w.endswith("…"))
    sdk(server, key).chat.completions.create(model="priced", messages=HI)
    listed = subprocess.run(
        [portico, "keys", "list", "--url", server["url"]],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        check=True,
    ).stdout
    assert "cli-team" in listed and key not in listed
    key_id = next(k["id"] for k in admin(server, "GET", "/admin/keys").json()["data"] if k["name"] == "cli-team")
    subprocess.run([portico, "keys", "revoke", key_id, "--url", server["url"]], env=env, check=True,
                   capture_output=True)  # fmt: skip
    with pytest.raises(openai.AuthenticationError):
        sdk(server, key).chat.completions.create(model="priced", messages=HI)
    usage = subprocess.run(
        [portico, "usage", "--url", server["url"], "--group-by", "key"],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        check=True,
    ).stdout
    assert "cli-team" in usage


def test_no_key_or_secret_in_logs(server: dict) -> None:
    _, key = new_key(server)
    sdk(server, key).chat.completions.create(model="priced", messages=HI)
    time.sleep(0.5)  # the log writer thread flushes asynchronously
    text = Path(server["log"]).read_text()
    assert key not in text and MASTER not in text and "sk-upstream-secret" not in text


@pytest.mark.parametrize(
    ("args", "needle"),
    [(["--host", "0.0.0.0"], "without a master key"), (["--workers", "2"], "needs shared state")],
)
def test_unsafe_start_is_refused(tmp_path: Path, args: list[str], needle: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "state_dir": str(tmp_path),
                "models": [{"name": "m", "deployments": [{"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}]}],
            }
        )
    )
    r = subprocess.run([str(VENV_BIN / "portico"), "serve", "--config", str(cfg), *args], capture_output=True,
                       text=True, timeout=60)  # fmt: skip
    assert r.returncode == 2 and needle in r.stderr


def test_metrics_count_requests_tokens_cost_and_streams(server: dict) -> None:
    _, key = new_key(server)
    client = sdk(server, key)
    client.chat.completions.create(model="priced", messages=HI)
    list(client.chat.completions.create(model="priced", messages=HI, stream=True))
    assert httpx.get(server["url"] + "/metrics").status_code == 401  # guarded like /admin
    text = admin(server, "GET", "/metrics").text
    lines = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert any(ln.startswith("portico_requests_total{") and 'model="priced"' in ln and 'status="200"' in ln
               and 'endpoint="chat"' in ln for ln in lines)  # fmt: skip
    assert any(ln.startswith("portico_tokens_total{") and 'kind="completion"' in ln for ln in lines)
    assert any(ln.startswith("portico_cost_usd_total{") for ln in lines)
    assert any(ln.startswith("portico_time_to_first_token_seconds_count{") for ln in lines)
    assert any(ln.startswith("portico_upstream_attempts_total{") and 'outcome="ok"' in ln for ln in lines)
    # A made-up model name never becomes a label value.
    client.chat.completions.create(model="priced", messages=HI)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="made-up-model-name", messages=HI)
    assert "made-up-model-name" not in admin(server, "GET", "/metrics").text
