"""Isolation between keys and secrets in every output, against one real server (auth on, DEBUG logging, OTLP
export, traces redacted, a pii-masking application, the exact and semantic caches per key).

Isolation: a key never reads another key's traces (the request browser is master-only), cached answers (exact and
semantic cache scoped per key), stored responses, approvals or feedback; keys are stored as SHA-256 hashes only.

Canaries: a virtual key, the master key and a provider secret (``${ENV}`` in the config) and PII values are
planted; after traffic through the official openai SDK (plain, streamed, responses, feedback, failed auth) every
output is searched for them: the server's log (stderr, DEBUG), every file under state_dir (SQLite database, WAL,
cache), ``/metrics`` and the OTLP export.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.test_trace_redaction import RawOtlp
from tests.support import portico_server

MASTER = "mk-canary-master-5f0c1d9e7a2b4c68"
PROVIDER_SECRET = "sk-canary-provider-9d3e7f1a2b6c4e80"
EMAIL = "ingrid.vasquez-holm@example.net"
PHONE = "+1 212 555 0187"
CARD = "5555 5555 5555 4444"
PII = (EMAIL, PHONE, CARD, "vasquez-holm", "555 0187", "5555 4444")


class RudeUpstream:
    """An upstream that refuses every call with a 401 whose message repeats the API key it was sent (some
    providers do): the provider secret then reaches Portico inside an error body."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                key = (self.headers.get("authorization") or "").removeprefix("Bearer ")
                body = json.dumps({"error": {"message": f"Incorrect API key provided: {key}.", "type":
                                             "invalid_request_error", "code": "invalid_api_key"}}).encode()  # fmt: skip
                self.send_response(401)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def server(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("isolation")
    otlp = RawOtlp()
    rude = RudeUpstream()
    mp = pytest.MonkeyPatch()
    mp.setenv("CANARY_PROVIDER_KEY", PROVIDER_SECRET)  # the config names ${CANARY_PROVIDER_KEY}
    mp.setenv("PORTICO_MASTER_KEY", MASTER)
    dep = {"provider": "openai", "model": "echo", "base_url": f"{katan}/v1", "api_key": "${CANARY_PROVIDER_KEY}"}
    cfg = {
        "state_dir": str(tmp / "state"),
        "logging": {"level": "DEBUG"},
        "tracing": {"content": "redacted", "otlp_endpoint": otlp.url},
        "cache": {"backend": "sqlite"},  # on disk, so the canary search reads it too
        "metrics": [{"name": "helpful", "type": "boolean"}],
        "models": [
            {"name": "oai", "deployments": [dep]},
            {"name": "rude", "deployments": [{**dep, "base_url": rude.url}]},
        ],
        "applications": [
            {"name": "masked", "model": "oai", "steps": [{"use": "pii", "ner": "none"}]},
            {"name": "masked_cached", "model": "oai", "steps": [{"use": "pii", "ner": "none"}, {"use": "cache"}]},
        ],
    }
    try:
        with portico_server(cfg, tmp, timeout=180) as url:
            yield {"url": url, "tmp": tmp, "otlp": otlp}
    finally:
        mp.undo()
        otlp.close()
        rude.close()


def admin(server: dict, method: str, path: str, **kw: object) -> httpx.Response:
    return httpx.request(method, server["url"] + path, headers={"authorization": f"Bearer {MASTER}"}, timeout=30,
                         **kw)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture(scope="module")
def keys(server: dict) -> dict[str, dict]:
    out = {}
    for name in ("alice", "bob"):
        r = admin(server, "POST", "/admin/keys", json={"name": name})
        assert r.status_code == 201, r.text
        body = r.json()
        sdk = openai.OpenAI(base_url=server["url"] + "/v1", api_key=body["key"], max_retries=0, timeout=60)
        out[name] = {"id": body["id"], "key": body["key"], "sdk": sdk}
    return out


def _get(server: dict, key: str, path: str) -> httpx.Response:
    return httpx.get(server["url"] + path, headers={"authorization": f"Bearer {key}"}, timeout=30)


def test_a_key_cannot_read_traces_usage_or_approvals(server: dict, keys: dict) -> None:
    alice, bob = keys["alice"], keys["bob"]
    raw = alice["sdk"].chat.completions.with_raw_response.create(
        model="oai", messages=[{"role": "user", "content": "alice's private question"}]
    )
    rid = raw.headers["x-request-id"]
    assert admin(server, "GET", f"/admin/requests/{rid}").status_code == 200  # the master key sees it
    for who in (alice, bob):  # a virtual key, even the one that made the request, sees none of the admin views
        for path in (f"/admin/requests/{rid}", "/admin/requests", "/admin/requests?q=private", "/admin/usage",
                     "/admin/stats", "/admin/approvals", "/admin/approvals/anything", "/admin/keys"):  # fmt: skip
            r = _get(server, who["key"], path)
            assert r.status_code == 403 and r.json()["error"]["code"] == "admin_only", (path, r.text)
            assert "private question" not in r.text


def _ask(sdk: openai.OpenAI, text: str, model: str = "oai") -> tuple[str, str]:
    raw = sdk.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=0
    )
    return raw.parse().choices[0].message.content or "", raw.headers.get("x-portico-cache", "")


def test_cached_answers_stay_with_the_key_that_caused_them(keys: dict) -> None:
    alice, bob = keys["alice"]["sdk"], keys["bob"]["sdk"]
    first, h1 = _ask(alice, "what is the launch code of project ember")
    again, h2 = _ask(alice, "what is the launch code of project ember")
    assert (h1, h2) == ("miss", "hit") and again == first
    time.sleep(1.1)  # the echo upstream's answer carries the time: a cross-key hit would repeat alice's
    other, h3 = _ask(bob, "what is the launch code of project ember")
    assert h3 == "miss" and other != first


def test_a_masked_requests_cached_answer_never_carries_another_persons_values(keys: dict) -> None:
    """pii then cache: both requests mask to "write to [EMAIL_ADDRESS_1]", but the stored answer has the values
    put back; it was served to the second person with the first one's address (fixed: cache.key.pii_scope)."""
    alice = keys["alice"]["sdk"]
    first, h1 = _ask(alice, "Please write to first.person@example.com about the invoice", "masked_cached")
    second, h2 = _ask(alice, "Please write to second.person@example.com about the invoice", "masked_cached")
    assert "first.person@example.com" in first and h1 == "miss"
    assert h2 == "miss" and "second.person@example.com" in second and "first.person" not in second
    again, h3 = _ask(alice, "Please write to first.person@example.com about the invoice", "masked_cached")
    assert h3 == "hit" and again == first  # the same person's repeat still hits


def test_the_cache_reads_the_pii_steps_mapping() -> None:
    from portico.cache.key import PII_MAPPING
    from portico.guardrails.pii.step import MAPPING

    assert PII_MAPPING == MAPPING


def test_stored_responses_are_private(keys: dict) -> None:
    alice, bob = keys["alice"]["sdk"], keys["bob"]["sdk"]
    r = alice.responses.create(model="oai", input="alice's stored note")
    for call in (
        lambda: bob.responses.retrieve(r.id),
        lambda: bob.responses.delete(r.id),
        lambda: bob.responses.input_items.list(r.id),
        lambda: bob.responses.create(model="oai", input="continue", previous_response_id=r.id),
    ):
        with pytest.raises(openai.NotFoundError) as e:
            call()
        assert "stored note" not in str(e.value.body)
    assert alice.responses.retrieve(r.id).id == r.id


def test_feedback_only_on_the_keys_own_requests(server: dict, keys: dict) -> None:
    alice, bob = keys["alice"], keys["bob"]
    raw = alice["sdk"].chat.completions.with_raw_response.create(
        model="oai", messages=[{"role": "user", "content": "judge me"}]
    )
    rid = raw.headers["x-request-id"]

    def feedback(who: dict, body: dict) -> httpx.Response:
        return httpx.post(server["url"] + "/v1/feedback", json=body, timeout=30,
                          headers={"authorization": f"Bearer {who['key']}"})  # fmt: skip

    theirs = feedback(bob, {"request_id": rid, "metric": "helpful", "value": False})
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "request_not_found"
    mine = feedback(alice, {"request_id": rid, "metric": "helpful", "value": True, "feedback_id": "fb-alice-1",
                            "user": "alice-user-7"})  # fmt: skip
    assert mine.status_code == 200, mine.text
    # bob reusing alice's feedback id on his own request learns nothing of hers
    own = bob["sdk"].chat.completions.with_raw_response.create(model="oai", messages=[{"role": "user",
                                                                                       "content": "mine"}])  # fmt: skip
    clash = feedback(bob, {"request_id": own.headers["x-request-id"], "metric": "helpful", "value": True,
                           "feedback_id": "fb-alice-1"})  # fmt: skip
    assert clash.status_code == 409
    assert rid not in clash.text and "alice-user-7" not in clash.text


def test_keys_are_stored_as_hashes_only(server: dict, keys: dict) -> None:
    con = sqlite3.connect(server["tmp"] / "state" / "portico.db")
    try:
        rows = {r[0]: r for r in con.execute("SELECT id, key_hash, key_prefix, name FROM api_keys")}
        dump = "\n".join(con.iterdump())
    finally:
        con.close()
    for who in keys.values():
        row = rows[who["id"]]
        assert row[1] == hashlib.sha256(who["key"].encode()).hexdigest()
        assert who["key"].startswith(row[2]) and len(row[2]) < len(who["key"]) // 2
        assert who["key"] not in dump and who["key"][len(row[2]) :] not in dump


def test_no_planted_canary_in_logs_store_metrics_or_export(server: dict, keys: dict) -> None:
    alice, bob = keys["alice"], keys["bob"]
    pii_text = f"Contact me at {EMAIL} or {PHONE}; my card is {CARD}."
    for model in ("oai", "masked"):  # traces redacted; the masked application's own pii step
        alice["sdk"].chat.completions.create(model=model, messages=[{"role": "user", "content": pii_text}])
        stream = bob["sdk"].chat.completions.create(
            model=model, messages=[{"role": "user", "content": pii_text}], stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    alice["sdk"].responses.create(model="oai", input="a stored answer, no PII")
    for stream in (False, True):  # the upstream's error body holds the provider secret
        with pytest.raises(openai.APIStatusError) as e:
            alice["sdk"].chat.completions.create(model="rude", messages=[{"role": "user", "content": "hi"}],
                                                 stream=stream)  # fmt: skip
        assert PROVIDER_SECRET not in json.dumps(e.value.body) and PROVIDER_SECRET not in str(e.value)
    for bad in (alice["key"] + "x", MASTER + "x", PROVIDER_SECRET):  # failed logins carry a secret-like token
        with pytest.raises(openai.AuthenticationError) as e:
            openai.OpenAI(base_url=server["url"] + "/v1", api_key=bad, max_retries=0).models.list()
        assert bad[:-1] not in json.dumps(e.value.body)  # the refusal does not repeat the token
    assert _get(server, alice["key"] + "x", "/admin/keys").status_code in (401, 403)
    metrics = admin(server, "GET", "/metrics")
    assert metrics.status_code == 200
    admin(server, "GET", "/admin/requests")  # flushes the trace writer
    deadline = time.monotonic() + 30  # the OTLP batch processor exports on its schedule (5 s)
    while b"EMAIL_ADDRESS" not in b"".join(server["otlp"].bodies) and time.monotonic() < deadline:
        time.sleep(0.2)

    outputs = {p: p.read_bytes() for p in (server["tmp"] / "state").rglob("*") if p.is_file()}
    assert any(p.name.startswith("portico.db") for p in outputs) and any(p.name.startswith("cache") for p in outputs)
    outputs[server["tmp"] / "portico.log"] = (server["tmp"] / "portico.log").read_bytes()
    outputs[Path("/metrics")] = metrics.content
    outputs[Path("otlp-export")] = b"".join(server["otlp"].bodies)
    secrets = (alice["key"], bob["key"], MASTER, PROVIDER_SECRET)
    for path, data in outputs.items():
        for value in (*secrets, *PII):
            assert value.encode() not in data, f"{value!r} found in {path}"
    # The search looks where the values would be: the log is at DEBUG (SQL statements included), the requests
    # carrying PII were stored and exported (as placeholders), and a key's shown prefix is in the store.
    assert b'"level":"debug"' in outputs[server["tmp"] / "portico.log"]
    store = b"".join(data for p, data in outputs.items() if p.name.startswith("portico.db"))
    assert b"[EMAIL_ADDRESS_1]" in store and b"[CREDIT_CARD_1]" in store
    assert b"EMAIL_ADDRESS" in outputs[Path("otlp-export")]
    assert alice["key"][:7].encode() in store
