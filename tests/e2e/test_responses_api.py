"""``/v1/responses`` driven by the official openai SDK against a real ``portico serve``: create, raw stream events,
the stream helper, ``output_text``, function tools, ``previous_response_id``, stored responses (get, delete,
input_items, isolation between keys), the local model (max_output_tokens, structured output, a tool call), and
clear 400s. The upstream ``oai`` is llm-katan's echo model: its answer names how many messages it received."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from tests.support import portico_server

MASTER = "mk-" + "r" * 40
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


# ---- the session server (no keys) --------------------------------------------------------------------------


def test_create_returns_output_text_and_usage(client: openai.OpenAI) -> None:
    r = client.responses.create(model="oai", input="hello there", instructions="Be brief.")
    assert r.id.startswith("resp_") and r.object == "response" and r.status == "completed"
    assert "User: hello there" in r.output_text
    assert "messages=2" in r.output_text  # instructions became the system message
    assert r.output[0].type == "message" and r.output[0].role == "assistant"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.instructions == "Be brief." and r.store is True


def test_raw_stream_events_are_in_documented_order(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="oai", input="stream this", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    deltas = kinds.count("response.output_text.delta")
    assert deltas > 1
    assert kinds == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * deltas,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[-4].text == text and "User: stream this" in text
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens > 0
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"


def test_stream_helper_and_final_response(client: openai.OpenAI) -> None:
    pieces = []
    with client.responses.stream(model="oai", input="helper stream") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                pieces.append(event.delta)
        final = stream.get_final_response()
    assert final.output_text == "".join(pieces) and "User: helper stream" in final.output_text


def test_function_tool_call_and_its_output_on_the_next_turn(client: openai.OpenAI) -> None:
    r1 = client.responses.create(model="oai", input="What is the weather in Paris?", tools=[WEATHER])
    [call] = r1.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert "city" in json.loads(call.arguments) and call.call_id
    assert r1.output_text == ""
    r2 = client.responses.create(
        model="oai",
        previous_response_id=r1.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
    )
    # user question, assistant tool call, tool output: the stored conversation came back.
    assert "messages=3" in r2.output_text and r2.previous_response_id == r1.id


def test_function_tool_call_streams_its_arguments(client: openai.OpenAI) -> None:
    with client.responses.stream(model="oai", input="weather in Rome?", tools=[WEATHER]) as stream:
        kinds = [e.type for e in stream]
        final = stream.get_final_response()
    assert "response.function_call_arguments.delta" in kinds
    assert kinds.index("response.function_call_arguments.done") < kinds.index("response.output_item.done")
    [call] = final.output
    assert call.type == "function_call" and json.loads(call.arguments)["city"]


def test_input_items_with_manual_history(client: openai.OpenAI) -> None:
    """A client may also send the whole history itself, including an earlier response's output items."""
    r1 = client.responses.create(model="oai", input="first", store=False)
    r2 = client.responses.create(
        model="oai",
        store=False,
        input=[
            {"role": "user", "content": "first"},
            *[item.model_dump(exclude_none=True) for item in r1.output],
            {"role": "user", "content": [{"type": "input_text", "text": "second"}]},
        ],
    )
    assert "messages=3" in r2.output_text and "User: second" in r2.output_text


def test_previous_response_id_continues_without_old_instructions(client: openai.OpenAI) -> None:
    r1 = client.responses.create(model="oai", input="one", instructions="Old rules.")
    r2 = client.responses.create(model="oai", input="two", previous_response_id=r1.id)
    assert "messages=3" in r2.output_text  # user, assistant, user: instructions are not carried over
    r3 = client.responses.create(model="oai", input="three", previous_response_id=r2.id, instructions="New.")
    assert "messages=6" in r3.output_text  # New system + 2 earlier turns (4 messages) + this one


def test_stored_response_get_input_items_and_delete(client: openai.OpenAI) -> None:
    items = [{"role": "user", "content": f"part {i}"} for i in range(3)]
    r = client.responses.create(model="oai", input=items, metadata={"ticket": "T-1"})
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text and got.metadata == {"ticket": "T-1"}
    listed = list(client.responses.input_items.list(r.id))
    assert [i.content[0].text for i in listed] == ["part 2", "part 1", "part 0"]  # newest first, as OpenAI
    assert all(i.id.startswith("msg_") for i in listed)
    page = client.responses.input_items.list(r.id, order="asc", limit=2)
    assert [i.content[0].text for i in page.data] == ["part 0", "part 1"] and page.has_more
    rest = client.responses.input_items.list(r.id, order="asc", limit=2, after=page.data[-1].id)
    assert [i.content[0].text for i in rest.data] == ["part 2"] and not rest.has_more
    with pytest.raises(openai.BadRequestError):
        client.responses.retrieve(r.id, stream=True)
    client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(r.id)


def test_store_false_keeps_nothing(client: openai.OpenAI) -> None:
    r = client.responses.create(model="oai", input="forget me", store=False)
    assert r.store is False
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as ei:
        client.responses.create(model="oai", input="again", previous_response_id=r.id)
    assert ei.value.body["param"] == "previous_response_id"


def test_an_application_pipeline_runs_for_responses(client: openai.OpenAI) -> None:
    r = client.responses.create(model="helper", input="hi")
    assert "messages=2" in r.output_text  # the application's system_prompt step added its message


def test_anthropic_upstream_through_responses(client: openai.OpenAI) -> None:
    r = client.responses.create(model="claude", input="hello anthropic", max_output_tokens=77)
    assert "User: hello anthropic" in r.output_text and "max_tokens=77" in r.output_text


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"input": "x", "tools": [{"type": "web_search"}]}, "tools[0].type", "unsupported_tool"),
        ({"input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["kb"]}]},
         "tools[0].vector_store_ids[0]", "vector_store_not_found"),
        ({"input": "x", "tools": [{"type": "mcp", "server_label": "s"}]}, "tools[0].server_label",
         "mcp_server_not_allowed"),
        ({"input": "x", "tools": [{"type": "code_interpreter"}]}, "tools[0].type", "unsupported_tool"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type", "unsupported_input_item"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
         "input[0].content[0].image_url", None),
        ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format", None),
        ({"input": "x", "background": True}, "background", "invalid_value"),
        ({"input": "x", "tool_choice": "sometimes"}, "tool_choice", "invalid_value"),
        ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": "other"}},
         "tool_choice.name", None),
        ({}, "input", "invalid_value"),
    ],
)  # fmt: skip
def test_bad_requests_are_clear_400s(portico: str, body: dict, param: str, code: str | None) -> None:
    r = httpx.post(f"{portico}/v1/responses", json={"model": "oai", **body}, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error"
    if code:
        assert err["code"] == code
    if code == "unsupported_tool":
        assert body["tools"][0]["type"] in err["message"]


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as ei:
        client.responses.create(model="no-such-model", input="x")
    assert ei.value.body["code"] == "model_not_found"


# ---- the local model ------------------------------------------------------------------------------------------


def test_local_max_output_tokens_makes_an_incomplete_response(client: openai.OpenAI) -> None:
    r = client.responses.create(model="local", input="Write a long story about a dragon.", max_output_tokens=5,
                                temperature=0)  # fmt: skip
    assert r.status == "incomplete" and r.incomplete_details.reason == "max_output_tokens"
    assert r.output_text and r.usage.output_tokens <= 5


def test_local_stream_ends_incomplete_at_the_token_cap(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="local", input="Tell me about dragons.", max_output_tokens=8,
                                          temperature=0, stream=True))  # fmt: skip
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    last = events[-1]
    assert last.type == "response.incomplete" and last.response.incomplete_details.reason == "max_output_tokens"
    assert text and last.response.output_text == text and last.response.usage.output_tokens <= 8


def test_local_follow_up_with_previous_response_id(client: openai.OpenAI) -> None:
    first = client.responses.create(model="local", input="Name a colour.", max_output_tokens=4, temperature=0)
    second = client.responses.create(model="local", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "And another one?"}]}], previous_response_id=first.id, max_output_tokens=4,
        temperature=0)  # fmt: skip
    assert second.output_text and second.usage.input_tokens > first.usage.input_tokens


class City(BaseModel):
    city: str = Field(max_length=24)


def test_local_structured_output_from_text_format(client: openai.OpenAI) -> None:
    r = client.responses.parse(model="local", input="Name a city in France.", text_format=City,
                               max_output_tokens=40, temperature=0)  # fmt: skip
    assert r.text.format.type == "json_schema"
    if r.status == "completed":  # grammar-constrained: a finished answer is valid JSON of the schema
        assert isinstance(r.output_parsed, City)
    else:
        assert r.output_text.lstrip().startswith("{")


def test_local_function_call(client: openai.OpenAI) -> None:
    r = client.responses.create(model="local", input="What is the weather in Paris?", tools=[WEATHER],
                                tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=60,
                                temperature=0)  # fmt: skip
    call = next(i for i in r.output if i.type == "function_call")
    assert call.name == "get_weather" and "city" in json.loads(call.arguments)


# ---- keys: isolation, permissions, accounting -----------------------------------------------------------------


@contextlib.contextmanager
def keyed_server(katan: str, tmp: Path) -> Iterator[dict]:
    """A Portico with a master key, two models on llm-katan and an application with a guardrail step (shared with
    the Messages tests)."""
    cfg = {
        "state_dir": str(tmp / "state"),
        "auth": {"master_key": MASTER},
        "storage": {"usage_flush_seconds": 0.1},
        "models": [{"name": name, "deployments": [{"provider": "openai", "model": "echo", "base_url": f"{katan}/v1",
                                                   "api_key": "sk-x"}]} for name in ("oai", "other")],
        "applications": [{"name": "guarded", "model": "oai",
                          "steps": [{"use": "handoff", "answer": "A colleague will answer here."}]}],
    }  # fmt: skip
    with portico_server(cfg, tmp) as url:
        yield {"url": url, "db": tmp / "state" / "portico.db"}


def new_key(url: str, **fields: object) -> tuple[str, str]:
    """(id, key) of a new virtual key."""
    r = httpx.post(url + "/admin/keys", headers={"authorization": f"Bearer {MASTER}"},
                   json={"name": f"k-{time.monotonic_ns()}", **fields}, timeout=30)  # fmt: skip
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


@pytest.fixture(scope="module")
def keyed(katan: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with keyed_server(katan, tmp_path_factory.mktemp("responses-keys")) as server:
        yield server


def _key(server: dict, **fields: object) -> tuple[str, openai.OpenAI]:
    key_id, key = new_key(server["url"], **fields)
    return key_id, openai.OpenAI(base_url=server["url"] + "/v1", api_key=key, max_retries=0, timeout=30)


def test_stored_responses_are_private_to_their_key(keyed: dict) -> None:
    _, a = _key(keyed)
    _, b = _key(keyed)
    r = a.responses.create(model="oai", input="mine")
    for call in (
        lambda: b.responses.retrieve(r.id),
        lambda: b.responses.delete(r.id),
        lambda: b.responses.input_items.list(r.id),
        lambda: b.responses.create(model="oai", input="steal", previous_response_id=r.id),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert a.responses.retrieve(r.id).id == r.id  # untouched by b's delete
    assert "messages=3" in a.responses.create(model="oai", input="more", previous_response_id=r.id).output_text
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=keyed["url"] + "/v1", api_key="pk-wrong", max_retries=0).responses.retrieve(r.id)


def test_key_model_permission_applies(keyed: dict) -> None:
    _, sdk = _key(keyed, models=["other"])
    with pytest.raises(openai.PermissionDeniedError) as ei:
        sdk.responses.create(model="oai", input="x")
    assert ei.value.body["code"] == "model_not_allowed"
    assert sdk.responses.create(model="other", input="x").status == "completed"


def test_rate_limit_applies(keyed: dict) -> None:
    _, sdk = _key(keyed, rpm=1)
    sdk.responses.create(model="oai", input="one", store=False)
    with pytest.raises(openai.RateLimitError) as ei:
        sdk.responses.create(model="oai", input="two", store=False)
    assert ei.value.response.headers["retry-after"]


def test_usage_is_booked_under_the_responses_endpoint(keyed: dict) -> None:
    key_id, sdk = _key(keyed)
    raw = sdk.responses.with_raw_response.create(model="oai", input="count me", store=False)
    request_id = raw.headers["x-request-id"]
    with sdk.responses.stream(model="oai", input="and me", store=False) as s:
        s.until_done()
    deadline = time.monotonic() + 10
    rows: list = []
    while time.monotonic() < deadline and len(rows) < 2:
        with sqlite3.connect(keyed["db"]) as db:
            rows = db.execute("SELECT endpoint, status, completion_tokens, request_id FROM usage WHERE key_id = ?",
                              (key_id,)).fetchall()  # fmt: skip
        time.sleep(0.2)
    assert len(rows) == 2 and {r[0] for r in rows} == {"responses"} and all(r[1] == 200 and r[2] > 0 for r in rows)
    assert request_id in {r[3] for r in rows}
    trace = None
    while time.monotonic() < deadline and trace is None:
        t = httpx.get(f"{keyed['url']}/admin/requests/{request_id}", headers={"authorization": f"Bearer {MASTER}"})
        trace = t.json() if t.status_code == 200 else time.sleep(0.2)
    assert trace is not None and trace["endpoint"] == "responses" and trace["spans"]


def test_cache_and_guardrail_steps_apply(keyed: dict) -> None:
    _, sdk = _key(keyed)
    ask = {"model": "oai", "input": "What is the capital of France?", "temperature": 0, "store": False}
    first = sdk.responses.with_raw_response.create(**ask)
    second = sdk.responses.with_raw_response.create(**ask)
    assert first.headers["x-portico-cache"] == "miss" and second.headers["x-portico-cache"] == "hit"
    assert second.parse().output_text == first.parse().output_text
    # The handoff step answers for the model, plain and streamed (a stock answer replayed as events).
    r = sdk.responses.create(model="guarded", input="I want to talk to a human now")
    assert r.output_text == "A colleague will answer here."
    with sdk.responses.stream(model="guarded", input="let me speak to an agent") as s:
        assert s.get_final_response().output_text == "A colleague will answer here."
    claude = anthropic.Anthropic(base_url=keyed["url"], api_key=sdk.api_key, max_retries=0)
    m = claude.messages.create(model="guarded", max_tokens=16, messages=[{"role": "user", "content": "real person"}])
    assert m.content[0].text == "A colleague will answer here."
