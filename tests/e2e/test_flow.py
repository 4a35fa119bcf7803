"""The README's branch/loop recipes end to end: a real Portico process, llm-katan upstreams told apart by their
deployment names (the ``x-portico-model`` header), the local MiniLM embedder for intents and the knowledge base,
the openai SDK as the client, and the stored traces to show the path each request took.

llm-katan answers ``[echo] model=… messages=N …\\nUser: <last user message>``, which makes checks deterministic: an
answer passes ``must_match: "previous answer failed"`` only once the feedback step has added that user turn. Its
echo cannot rewrite a query meaningfully, so the corrective-RAG test shows the bounded retry path, not a better
second retrieval."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support import portico_server

pytestmark = pytest.mark.slow

PRICE = {"input": 1.0, "output": 2.0}  # USD per 1M tokens: the request's cost shows every generation


@pytest.fixture(scope="module")
def server(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("flow")
    up = {"provider": "openai", "model": "echo", "base_url": f"{katan}/v1", "api_key": "sk-test", "price": PRICE}
    intents = [
        {"name": "billing", "description": "billing, invoices, refunds and payments",
         "examples": ["I was charged twice, please refund me", "where is my invoice", "update my credit card"]},
        {"name": "device", "description": "problems with a router or modem",
         "examples": ["my wifi router keeps rebooting", "the modem light is blinking red"]},
    ]  # fmt: skip
    cfg = {
        "state_dir": str(tmp / "state"),
        "storage": {"usage_flush_seconds": 0.1},
        "cache": {"enabled": False},
        "models": [
            {"name": "small", "deployments": [{**up, "name": "small-dep"}]},
            {"name": "billing-model", "deployments": [{**up, "name": "billing-dep"}]},
            {"name": "device-model", "deployments": [{**up, "name": "device-dep"}]},
            {"name": "big", "deployments": [{**up, "name": "big-dep"}]},
            {"name": "emb", "type": "embedding", "deployments": [{"provider": "local"}]},
        ],
        "pipelines": {
            "billing-desk": [{"use": "system_prompt", "text": "You are the billing desk."},
                             {"use": "generate", "model": "billing-model"}],
            "device-desk": [{"use": "system_prompt", "text": "You are the device desk."},
                            {"use": "generate", "model": "device-model"}],
        },
        "tools": [{"name": "cancel_order", "kind": "http", "method": "POST", "write": True,
                   "description": "Cancel an order", "url": "http://127.0.0.1:9/orders/{order_id}/cancel",
                   "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}},
                                  "required": ["order_id"]}}],
        "applications": [
            {"name": "helpdesk", "model": "small", "steps": [
                {"use": "route_intent", "clarification": None, "intents": intents},
                {"branch": [
                    {"when": 'intent.name == "billing" && intent.confidence >= 0.5',
                     "steps": [{"call": "billing-desk"}]},
                    {"when": 'intent.name == "device" && intent.confidence >= 0.5',
                     "steps": [{"call": "device-desk"}]},
                    {"else": [{"use": "generate"}]},
                ]},
            ]},
            {"name": "careful", "model": "small", "steps": [
                {"loop": {"until": "output.checks.passed", "max_iterations": 3, "steps": [
                    {"use": "feedback"}, {"use": "generate"},
                    {"use": "output_checks", "must_match": "previous answer failed", "on_fail": {"record": True}}]}},
                {"branch": [{"when": "!output.checks.passed", "steps": [{"use": "generate", "model": "big"}]}]},
            ]},
            {"name": "hopeless", "model": "small", "steps": [
                {"loop": {"until": "output.checks.passed", "max_iterations": 2, "steps": [
                    {"use": "feedback"}, {"use": "generate"},
                    {"use": "output_checks", "must_match": "NEVER-SAID", "on_fail": {"record": True}}]}},
                {"branch": [{"when": "!output.checks.passed", "steps": [{"use": "generate", "model": "big"}]}]},
            ]},
            {"name": "crag", "model": "small", "steps": [
                {"use": "retrieve", "kb": "handbook", "mode": "bm25", "k": 3, "min_score": 0.01},
                {"branch": [{"when": "retrieval.count == 0", "steps": [
                    {"loop": {"until": "retrieval.count > 0", "max_iterations": 2, "steps": [
                        {"use": "rewrite", "model": "small", "first_turn": "rewrite", "on_unresolved": "keep"},
                        {"use": "retrieve", "kb": "handbook", "mode": "bm25", "k": 3, "min_score": 0.01}]}}]}]},
                {"use": "pack", "answer_tokens": 128},
            ]},
            {"name": "act-or-answer", "model": "small", "steps": [  # an agent only when the intent is an action
                {"use": "route_intent", "clarification": None, "intents": [
                    {"name": "action", "description": "the user wants something done: cancel, send, book, change",
                     "examples": ["cancel my order A-17", "send the invoice to my email", "book a technician visit"]},
                    {"name": "question", "description": "the user asks for information",
                     "examples": ["what are your opening hours", "how long does shipping take",
                                  "what is your refund policy"]}]},
                {"branch": [
                    {"when": 'intent.name == "action" && intent.confidence >= 0.5',
                     "steps": [{"use": "agent", "tools": ["cancel_order"], "max_steps": 1, "on_injection": "off"}]},
                    {"else": [{"use": "generate"}]},
                ]},
            ]},
            {"name": "desk", "model": "small", "steps": [
                {"branch": [
                    {"when": 'request.metadata.tier == "gold"',
                     "steps": [{"use": "system_prompt", "text": "You are the gold desk."},
                               {"use": "generate", "model": "big"}]},
                    {"else": [{"use": "system_prompt", "text": "You are the standard desk."}, {"use": "generate"}]},
                ]},
            ]},
        ],
    }  # fmt: skip
    with portico_server(cfg, tmp, timeout=180) as url:
        yield url


def sdk(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0, timeout=60)


def ask(url: str, model: str, text: str, **kw: object) -> tuple[str, str, str]:
    """(answer, the deployment that answered, request id)."""
    raw = sdk(url).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": text}], **kw
    )
    return raw.parse().choices[0].message.content or "", raw.headers["x-portico-model"], raw.headers["x-request-id"]


def spans(url: str, rid: str) -> list[dict]:
    """The request's spans, flattened (the trace is written in the background: wait for it)."""
    deadline = time.monotonic() + 15
    while True:
        r = httpx.get(f"{url}/admin/requests/{rid}", timeout=30)
        if r.status_code == 200:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.2)
    out: list[dict] = []
    todo = list(r.json()["spans"])
    while todo:
        s = todo.pop(0)
        out.append(s)
        todo.extend(s.get("children") or [])
    return out


def flow_spans(url: str, rid: str) -> dict[str, dict]:
    return {s["name"]: s["attributes"] for s in spans(url, rid) if "portico.flow.kind" in s["attributes"]}


def test_intent_routes_to_separate_sub_pipelines_with_different_models(server: str) -> None:
    _, dep, rid = ask(server, "helpdesk", "I was charged twice this month, I want a refund")
    assert dep == "billing-dep"
    path = flow_spans(server, rid)
    assert path["steps[1].when[0]"]["portico.flow.value"] is True
    assert "call billing-desk" in {s["name"] for s in spans(server, rid)}
    _, dep, rid = ask(server, "helpdesk", "my modem light is blinking red again")
    assert dep == "device-dep"
    assert flow_spans(server, rid)["steps[1].when[1]"]["portico.flow.false"] == ["steps[1].when[0]"]


def test_generate_check_loop_passes_with_feedback(server: str) -> None:
    answer, dep, rid = ask(server, "careful", "Tell me about lighthouses")
    assert dep == "small-dep" and "previous answer failed these checks: must_match" in answer
    iters = [a for n, a in flow_spans(server, rid).items() if "iteration" in n]
    assert [(a["portico.flow.iteration"], a["portico.flow.value"]) for a in iters] == [(1, False), (2, True)]
    root = spans(server, rid)[0]["attributes"]
    # both generations are paid for: the first one's usage is booked when the second replaces it
    first = [s for s in spans(server, rid) if s["name"] == "generate"]
    assert len(first) == 2
    assert root["portico.cost_usd"] > 0 and root["gen_ai.usage.input_tokens"] > 0
    one_call = (root["gen_ai.usage.input_tokens"] * PRICE["input"] + root["gen_ai.usage.output_tokens"]
                * PRICE["output"]) / 1e6  # fmt: skip
    assert root["portico.cost_usd"] > one_call * 1.2


def test_generate_check_loop_falls_back_after_max_iterations(server: str) -> None:
    _, dep, rid = ask(server, "hopeless", "Tell me about lighthouses")
    assert dep == "big-dep"  # the fallback branch's model answered
    path = flow_spans(server, rid)
    assert path["steps[0] iteration 2"]["portico.flow.exhausted"] is True
    assert path["steps[1].when[0]"]["portico.flow.value"] is True


def test_corrective_rag_retries_retrieval_a_bounded_number_of_times(server: str) -> None:
    r = httpx.post(f"{server}/v1/knowledge_bases", json={"name": "handbook"}, timeout=60)
    assert r.status_code == 201, r.text
    docs = [{"id": "vacation", "text": "Employees get 28 days of paid vacation per year."},
            {"id": "laptops", "text": "Every engineer receives a laptop with 32 GB of memory."}]  # fmt: skip
    r = httpx.post(f"{server}/v1/knowledge_bases/handbook/documents", json={"documents": docs}, timeout=120)
    assert r.status_code == 200, r.text

    _, _, rid = ask(server, "crag", "How many days of paid vacation do employees get?")
    path = flow_spans(server, rid)
    assert path["steps[1] (no arm)"]["portico.flow.value"] is False  # a strong first retrieval: no rewrite
    assert "rewrite" not in {s["name"] for s in spans(server, rid)}

    _, _, rid = ask(server, "crag", "quokka zeppelin")  # nothing in the handbook matches
    path = flow_spans(server, rid)
    assert path["steps[1].when[0]"]["portico.flow.value"] is True
    iters = [a for n, a in path.items() if "iteration" in n]
    assert [a["portico.flow.value"] for a in iters] == [False, False] and iters[-1]["portico.flow.exhausted"]
    assert [s["name"] for s in spans(server, rid)].count("rewrite") == 2  # at most max_iterations rewrites


def test_answer_or_act_runs_the_agent_only_for_actions(server: str) -> None:
    act = sdk(server).chat.completions.with_raw_response.create(
        model="act-or-answer", messages=[{"role": "user", "content": "Please cancel my order A-17"}])
    approvals = act.headers.get("x-portico-approvals", "")
    assert approvals.startswith("appr_")  # the write waits for a human: nothing was cancelled
    taken = flow_spans(server, act.headers["x-request-id"])
    assert any(a.get("portico.flow.kind") == "branch" for a in taken.values())
    assert "agent" in {s["name"] for s in spans(server, act.headers["x-request-id"])}
    answer, deployment, rid = ask(server, "act-or-answer", "What are your opening hours?")
    assert answer.startswith("[echo]") and deployment == "small-dep"
    assert "agent" not in {s["name"] for s in spans(server, rid)}
    pending = httpx.get(f"{server}/admin/approvals", params={"status": "pending"}, timeout=30).json()["data"]
    assert approvals.split(",")[0] in {a["id"] for a in pending}


def test_streaming_through_a_branch(server: str) -> None:
    for tier, dep in (("gold", "big-dep"), ("basic", "small-dep")):
        with sdk(server).chat.completions.with_streaming_response.create(
            model="desk", stream=True, metadata={"tier": tier},
            messages=[{"role": "user", "content": "hello there"}],
        ) as raw:  # fmt: skip
            assert raw.headers["x-portico-model"] == dep
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        assert "messages=2" in text and "hello there" in text  # the arm's system prompt went with the question


def test_pipeline_graph_api(server: str) -> None:
    g = httpx.get(f"{server}/admin/applications/careful/pipeline", timeout=30).json()
    assert (g["application"], g["model"], g["version"]) == ("careful", "small", "1")
    loop, fallback = g["steps"]
    assert (loop["kind"], loop["span"], loop["until"], loop["max_iterations"]) == (
        "loop", "loop steps[0]", "output.checks.passed", 3)  # fmt: skip
    assert [s["span"] for s in loop["steps"]] == ["feedback", "generate", "output_checks"]
    assert fallback["arms"][0]["steps"][0] == {"kind": "step", "span": "generate", "path": "steps[1].when[0].steps[0]",
                                               "model": "big"}  # fmt: skip
    r = httpx.get(f"{server}/admin/applications/nope/pipeline", timeout=30)
    assert r.status_code == 404 and r.json()["error"]["message"] == "no application 'nope'"
