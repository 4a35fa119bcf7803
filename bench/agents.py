"""bench-agents: Portico's ``agent`` step vs LangGraph's prebuilt ReAct agent vs the OpenAI Agents SDK, in one run.

The same multi-step task for all: a scripted OpenAI-compatible upstream (its own process) asks for 1, then 2, then 3
tool calls in three turns and answers in the fourth (4 model calls = 4 steps, 6 tool calls per run); the tools are
HTTP endpoints of a local tool server (another process). Each framework runs in this process with its own client,
the tools of one turn concurrently.

- Orchestration overhead per step: a bare aiohttp loop makes the same HTTP requests with no framework (the
  floor: upstream, tools and network); a framework's overhead per step is (its run time - the floor's median run
  time) / 4. p50/p99 over sequential runs.
- Throughput: completed runs per second with 16 runs in flight.
- Tool-call accuracy of the local embedded model (SmolLM2-135M through Portico's gateway) on bench/agent_tasks.jsonl:
  30 single-tool tasks, 7 tools offered each time; right tool, and right tool with the expected arguments. A
  stronger OpenAI-compatible model: AGENT_EVAL_BASE_URL, AGENT_EVAL_MODEL, AGENT_EVAL_API_KEY.

Env: BENCH_SEQ (sequential runs per framework, default 200), BENCH_SECONDS (throughput window, default 15),
BENCH_SKIP_ACCURACY=1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
# Run as a script, this file's folder comes first on the path, and this file would shadow the Agents SDK's package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))
from tests.scripted_upstream import ScriptedUpstream, Turn  # noqa: E402
from tests.support import free_port, wait_http  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "agents.md"
TASKS = ROOT / "bench" / "agent_tasks.jsonl"
QUESTION = "Where is my order A1, and are the three items of it in stock for a re-order?"
ANSWER = "Order A1 shipped on Monday with DHL; all three items are in stock."
SCRIPT = [
    Turn.call("lookup_order", order_id="A1", prompt_tokens=120, completion_tokens=12),
    Turn.calls(("get_customer", {"customer_id": "C7"}), ("get_shipping", {"order_id": "A1"})),
    Turn.calls(("check_stock", {"sku": "S1"}), ("check_stock", {"sku": "S2"}), ("check_stock", {"sku": "S3"})),
    Turn.say(ANSWER),
]
STEPS = len(SCRIPT)
CONCURRENCY = 16
FLOOR, PORTICO = "bare aiohttp loop (floor)", "Portico agent step"
LANGGRAPH, AGENTS_SDK = "LangGraph create_react_agent", "OpenAI Agents SDK Runner"
# Tool name -> (path on the tool server, argument name, description).
TOOLS = {
    "lookup_order": ("order", "order_id", "Look up an order by its id"),
    "get_customer": ("customer", "customer_id", "Get a customer's profile"),
    "get_shipping": ("shipping", "order_id", "Get the shipping status of an order"),
    "check_stock": ("stock", "sku", "Check whether an item (SKU) is in stock"),
}


# ---- the upstream and tool server processes ---------------------------------------------------------------------


async def _tool(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    return web.json_response({"tool": name, **dict(request.query), "status": "ok", "detail": "in stock, shipped"})


def serve(kind: str, port: int) -> None:
    async def main() -> None:
        if kind == "chat":
            up = ScriptedUpstream(SCRIPT)
            up.port, up.url = port, f"http://127.0.0.1:{port}"
            await up.__aenter__()
        else:
            app = web.Application()
            app.router.add_get("/health", lambda r: web.json_response({"ok": True}))
            app.router.add_get("/tools/{name}", _tool)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    asyncio.run(main())


@contextlib.contextmanager
def servers() -> Iterator[tuple[str, str, list[subprocess.Popen]]]:
    procs = []
    urls = []
    try:
        for kind in ("chat", "tools"):
            port = free_port()
            p = subprocess.Popen([sys.executable, __file__, "--serve", kind, str(port)], cwd=ROOT)
            procs.append(p)
            wait_http(f"http://127.0.0.1:{port}/health", p, 30)
            urls.append(f"http://127.0.0.1:{port}")
        yield urls[0], urls[1], procs
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


# ---- the runners: each returns an async callable doing one whole run --------------------------------------------

Run = Callable[[], Awaitable[str]]


async def bare(chat: str, tools: str) -> tuple[Run, Callable[[], Awaitable[None]]]:
    """The floor: the same requests from a hand-written loop (no framework)."""
    session = aiohttp.ClientSession()
    specs = [_spec(n) for n in TOOLS]

    async def tool(call: dict[str, Any]) -> dict[str, Any]:
        name = call["function"]["name"]
        args = orjson.loads(call["function"]["arguments"])
        async with session.get(f"{tools}/tools/{TOOLS[name][0]}", params=args) as r:
            text = await r.text()
        return {"role": "tool", "tool_call_id": call["id"], "content": text}

    async def run() -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
        while True:
            body = {"model": "scripted", "messages": messages, "tools": specs}
            async with session.post(f"{chat}/v1/chat/completions", json=body) as r:
                msg = (await r.json())["choices"][0]["message"]
            messages.append(msg)
            if not msg.get("tool_calls"):
                return msg["content"]
            messages.extend(await asyncio.gather(*(tool(c) for c in msg["tool_calls"])))

    return run, session.close


def _spec(name: str) -> dict[str, Any]:
    _, arg, desc = TOOLS[name]
    params = {"type": "object", "properties": {arg: {"type": "string"}}, "required": [arg]}
    return {"type": "function", "function": {"name": name, "description": desc, "parameters": params}}


async def portico(chat: str, tools: str, state: Path, on_injection: str) -> tuple[Run, Callable[[], Awaitable[None]]]:
    from portico.config.loader import validate
    from portico.pipeline.context import RequestContext
    from portico.protocol.chat import ChatCompletionRequest
    from portico.runtime import Runtime

    tool_cfg = [
        {"name": n, "kind": "http", "description": d, "url": f"{tools}/tools/{path}?{arg}={{{arg}}}",
         "parameters": _spec(n)["function"]["parameters"]}
        for n, (path, arg, d) in TOOLS.items()
    ]  # fmt: skip
    cfg = validate(
        {
            "state_dir": str(state),
            "models": [{"name": "m", "deployments": [{"provider": "openai", "model": "scripted",
                                                      "base_url": f"{chat}/v1", "api_key": "k"}]}],
            "tools": tool_cfg,
            "applications": [{"name": "support", "model": "m", "steps": [
                {"use": "agent", "tools": list(TOOLS), "max_steps": 8, "on_injection": on_injection}]}],
        }
    )  # fmt: skip
    rt = Runtime(cfg)
    await rt.start()
    pipeline, app = rt.pipeline_for("support")
    n = 0

    async def run() -> str:
        nonlocal n
        n += 1
        req = ChatCompletionRequest.model_validate(
            {"model": "support", "messages": [{"role": "user", "content": QUESTION}]}
        )
        ctx = RequestContext(request=req, request_id=f"bench-{n}", model="support", application=app)
        await pipeline.run(ctx)
        assert ctx.response is not None
        return ctx.response["choices"][0]["message"]["content"]

    return run, rt.close


async def langgraph(chat: str, tools: str) -> tuple[Run, Callable[[], Awaitable[None]]]:
    from langchain_core.tools import StructuredTool
    from langchain_openai import ChatOpenAI
    from langgraph.prebuilt import create_react_agent

    session = aiohttp.ClientSession()
    lc_tools = []
    for name, (path, arg, desc) in TOOLS.items():

        async def call(_path: str = path, _arg: str = arg, **kw: str) -> str:
            async with session.get(f"{tools}/tools/{_path}", params={_arg: kw[_arg]}) as r:
                return await r.text()

        schema = _spec(name)["function"]["parameters"]
        lc_tools.append(StructuredTool.from_function(coroutine=call, name=name, description=desc, args_schema=schema))
    llm = ChatOpenAI(model="scripted", base_url=f"{chat}/v1", api_key="k", max_retries=0)
    agent = create_react_agent(llm, lc_tools)

    async def run() -> str:
        out = await agent.ainvoke({"messages": [("user", QUESTION)]})
        return out["messages"][-1].content

    return run, session.close


async def agents_sdk(chat: str, tools: str) -> tuple[Run, Callable[[], Awaitable[None]]]:
    from agents import Agent, FunctionTool, ModelSettings, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    session = aiohttp.ClientSession()
    sdk_tools = []
    for name, (path, arg, desc) in TOOLS.items():

        async def invoke(_ctx: Any, raw: str, _path: str = path, _arg: str = arg) -> str:
            args = json.loads(raw)
            async with session.get(f"{tools}/tools/{_path}", params={_arg: args[_arg]}) as r:
                return await r.text()

        params = dict(_spec(name)["function"]["parameters"], additionalProperties=False)
        sdk_tools.append(FunctionTool(name=name, description=desc, params_json_schema=params, on_invoke_tool=invoke))
    client = AsyncOpenAI(base_url=f"{chat}/v1", api_key="k", max_retries=0)
    model = OpenAIChatCompletionsModel(model="scripted", openai_client=client)
    agent = Agent(name="support", instructions="Answer order questions.", model=model, tools=sdk_tools,
                  model_settings=ModelSettings(parallel_tool_calls=True))  # fmt: skip

    async def run() -> str:
        result = await Runner.run(agent, QUESTION, max_turns=8)
        return str(result.final_output)

    async def close() -> None:
        await session.close()
        await client.close()

    return run, close


# ---- measurement ------------------------------------------------------------------------------------------------


@dataclass
class Measured:
    name: str
    runs: list[float]  # seconds per sequential run (wall clock)
    cpu: list[float]  # CPU seconds of this process per sequential run (the upstream and tools run elsewhere)
    rps: float
    errors: int


async def measure(name: str, run: Run, n_seq: int, seconds: float) -> Measured:
    for _ in range(10):  # warm-up: connections, lazy imports, caches
        got = await run()
        assert got == ANSWER, f"{name} answered {got!r}"
    runs, cpu = [], []
    for _ in range(n_seq):
        t0, c0 = time.perf_counter(), time.process_time()
        await run()
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    done = errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done, errors
        while time.perf_counter() < deadline:
            try:
                if await run() == ANSWER:
                    done += 1
                else:
                    errors += 1
            except Exception:
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return Measured(name, runs, cpu, done / (time.perf_counter() - t0), errors)


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


# ---- tool-call accuracy -----------------------------------------------------------------------------------------

S, N = {"type": "string"}, {"type": "number"}
ACC_TOOLS = [
    ("get_weather", "Get the current weather for a city", {"city": S}),
    ("convert_currency", "Convert an amount of money from one currency to another (ISO codes such as USD, EUR)",
     {"amount": N, "from_currency": S, "to_currency": S}),
    ("lookup_order", "Look up the status of a customer's order by its order id", {"order_id": S}),
    ("calculator", "Evaluate an arithmetic expression", {"expression": S}),
    ("get_time", "Get the current time in an IANA timezone such as Europe/Paris", {"timezone": S}),
    ("search_web", "Search the web for current information", {"query": S}),
    ("send_email", "Send an email", {"to": S, "subject": S, "body": S}),
]  # fmt: skip


def _fn(name: str, description: str, props: dict[str, Any]) -> dict[str, Any]:
    required = [k for k in props if k != "body"]
    return {"type": "function", "function": {"name": name, "description": description,
            "parameters": {"type": "object", "properties": props, "required": required}}}  # fmt: skip


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        try:
            return abs(float(got) - float(expected)) < 1e-6
        except (TypeError, ValueError):
            return False
    return str(got).strip().lower() == str(expected).strip().lower()


async def accuracy(model_entry: dict[str, Any], state: Path) -> dict[str, Any]:
    """Each task once, all tools offered, tool_choice auto; first tool call judged."""
    from portico.config.loader import validate
    from portico.pipeline.context import RequestContext
    from portico.protocol.chat import ChatCompletionRequest
    from portico.runtime import Runtime

    tasks = [json.loads(x) for x in TASKS.read_text().splitlines() if x.strip()]
    tasks = tasks[: int(os.environ.get("BENCH_ACC_LIMIT", len(tasks)))]
    tools = [_fn(*t) for t in ACC_TOOLS]
    rt = Runtime(validate({"state_dir": str(state), "models": [model_entry]}))
    await rt.start()
    name = model_entry["name"]
    right_tool = right_args = 0
    misses: list[str] = []
    t0 = time.perf_counter()
    try:
        for t in tasks:
            body = {"model": name, "messages": [{"role": "user", "content": t["prompt"]}], "tools": tools,
                    "tool_choice": "auto", "temperature": 0, "max_tokens": 96}  # fmt: skip
            req = ChatCompletionRequest.model_validate(body)
            pipeline, app = rt.pipeline_for(name)
            ctx = RequestContext(request=req, request_id=f"acc-{t['id']}", model=name, application=app)
            try:
                await pipeline.run(ctx)
                calls = (ctx.response or {})["choices"][0]["message"].get("tool_calls") or []
            except Exception as e:
                calls, misses = [], [*misses, f"{t['id']}: {type(e).__name__}"]
            print(f"  {name} {t['id']}: {calls[0]['function']['name'] if calls else 'no tool call'}", flush=True)
            if calls and calls[0]["function"]["name"] == t["tool"]:
                right_tool += 1
                try:
                    args = json.loads(calls[0]["function"]["arguments"] or "{}")
                except json.JSONDecodeError:
                    args = {}
                if all(_same(v, args.get(k)) for k, v in t["arguments"].items()):
                    right_args += 1
                else:
                    misses.append(f"{t['id']}: args {json.dumps(args)[:80]}")
            else:
                got = calls[0]["function"]["name"] if calls else "no tool call"
                misses.append(f"{t['id']}: {got}")
    finally:
        await rt.close()
    n = len(tasks)
    return {"model": name, "n": n, "tool": right_tool / n, "tool_and_args": right_args / n,
            "seconds": time.perf_counter() - t0, "misses": misses}  # fmt: skip


# ---- report -----------------------------------------------------------------------------------------------------


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "?"


async def main() -> None:
    n_seq = int(os.environ.get("BENCH_SEQ", "200"))
    seconds = float(os.environ.get("BENCH_SECONDS", "15"))
    started = time.time()
    load_before = load()
    carried = carried_accuracy()  # read before this run rewrites the file
    results: dict[str, Measured] = {}
    with servers() as (chat, tools, _), tempfile.TemporaryDirectory() as tmp:
        builders: list[tuple[str, Callable[[], Awaitable[tuple[Run, Callable[[], Awaitable[None]]]]]]] = [
            (FLOOR, lambda: bare(chat, tools)),
            (PORTICO, lambda: portico(chat, tools, Path(tmp) / "p1", "flag")),
            (PORTICO + ", screening off", lambda: portico(chat, tools, Path(tmp) / "p2", "off")),
            (LANGGRAPH, lambda: langgraph(chat, tools)),
            (AGENTS_SDK, lambda: agents_sdk(chat, tools)),
        ]
        for name, build in builders:
            run, close = await build()
            try:
                results[name] = await measure(name, run, n_seq, seconds)
            finally:
                await close()
            m = results[name]
            print(f"{name}: p50 run {statistics.median(m.runs) * 1000:.2f} ms, {m.rps:.1f} runs/s", flush=True)
        acc: list[dict[str, Any]] = []
        report(results, acc, n_seq, seconds, started, load_before, carried)  # kept if the accuracy part is cut short
        if os.environ.get("BENCH_SKIP_ACCURACY") != "1":
            local = {"name": "local", "deployments": [{"provider": "local"}]}
            acc.append(await accuracy(local, Path(tmp) / "a1"))
            if os.environ.get("AGENT_EVAL_MODEL"):
                env = os.environ
                dep = {"provider": "openai", "model": env["AGENT_EVAL_MODEL"], "base_url": env["AGENT_EVAL_BASE_URL"],
                       "api_key": env.get("AGENT_EVAL_API_KEY", "")}  # fmt: skip
                acc.append(await accuracy({"name": "eval", "deployments": [dep]}, Path(tmp) / "a2"))
    report(results, acc, n_seq, seconds, started, load_before, carried)


def carried_accuracy() -> tuple[list[str], str] | None:
    """With BENCH_SKIP_ACCURACY=1 the accuracy section of the previous results file is kept, marked as such: the
    accuracy depends on the model, not on the orchestration this benchmark's timing part measures, and costs ~10
    minutes of the local model."""
    if os.environ.get("BENCH_SKIP_ACCURACY") != "1" or not RESULTS.exists():
        return None
    text = RESULTS.read_text()
    start, end = text.find("## Tool-call accuracy"), text.find("## Run")
    last = text.rstrip("\n").rsplit("\n", 1)[-1]
    if start < 0 or end < start or "tool_acc_local=" not in last:
        return None
    section = [x for x in text[start:end].strip().splitlines()]
    while section and (not section[-1].strip() or section[-1].startswith("(Carried over")):
        section.pop()
    old = re.search(r"\(Carried over from the run of ([0-9-]+ [0-9:]+ UTC)", text)
    run_date = old.group(1) if old else (m.group(1) if (m := re.search(r"Date: ([0-9-]+ [0-9:]+ UTC)", text[end:]))
                                         else "an earlier date")  # fmt: skip
    note = f"(Carried over from the run of {run_date}: this run set BENCH_SKIP_ACCURACY=1.)"
    return [*section, "", note], last.split("tool_acc_local=", 1)[1].split()[0]


def report(results: dict[str, Measured], acc: list[dict[str, Any]], n_seq: int, seconds: float, started: float,
           load_before: str, carried: tuple[list[str], str] | None = None) -> None:  # fmt: skip
    base = results[FLOOR]
    floor_wall, floor_cpu = statistics.median(base.runs), statistics.median(base.cpu)

    def cpu_ms(m: Measured, p: float) -> float:  # framework CPU per step beyond the floor's
        return pct([(c - floor_cpu) / STEPS * 1000 for c in m.cpu], p)

    def wall_ms(m: Measured, p: float) -> float:
        return pct([(r - floor_wall) / STEPS * 1000 for r in m.runs], p)

    lines = [
        "# bench-agents: Portico's agent step vs LangGraph and the OpenAI Agents SDK",
        "",
        f"One task for every framework: a scripted OpenAI-compatible upstream asks for 1, 2, then 3 tool calls and "
        f"answers in the 4th turn ({STEPS} model calls = {STEPS} steps, 6 HTTP tool calls, a turn's calls run "
        "concurrently); upstream and tool server are separate processes, each framework runs in this one. A bare "
        "aiohttp loop making the same HTTP requests is the floor. Overhead per step = (a run's cost - the floor's "
        "median) / 4, as CPU time of this process (the upstream and tools run elsewhere, so this is the framework's "
        "own work, little affected by other load on the machine) and as wall time (adds waiting for a core on a "
        f"busy machine). {n_seq} sequential runs each; throughput = completed runs/s with {CONCURRENCY} runs in "
        f"flight for {seconds:.0f} s.",
        "",
        "| framework | run p50 (ms) | CPU/run p50 (ms) | overhead/step CPU p50 / p99 (ms) "
        "| overhead/step wall p50 / p99 (ms) | runs/s @16 | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        cpu = "—" if m is base else f"{cpu_ms(m, 50):.2f} / {cpu_ms(m, 99):.2f}"
        wall = "—" if m is base else f"{wall_ms(m, 50):.2f} / {wall_ms(m, 99):.2f}"
        lines.append(f"| {name} | {statistics.median(m.runs) * 1000:.2f} | {statistics.median(m.cpu) * 1000:.2f} "
                     f"| {cpu} | {wall} | {m.rps:.1f} | {m.errors} |")  # fmt: skip
    p, lg, sdk = results[PORTICO], results[LANGGRAPH], results[AGENTS_SDK]
    better = max(lg.rps, sdk.rps)
    lines += [
        "",
        f"Portico (default config: every tool output screened for injection) vs the better peer: "
        f"{p.rps / better:.1f}x the runs/s; overhead per step (CPU) p50 {cpu_ms(p, 50):.2f} ms vs "
        f"{min(cpu_ms(lg, 50), cpu_ms(sdk, 50)):.2f} ms. Goals of the issue: overhead p50 <= 1 ms per step and >= 5x "
        "the better peer's runs/s.",
        "Portico's runs go through its whole pipeline in-process: the gateway (retry plan, cost accounting), http "
        "tools (schema validation, fixed-origin URL templates, size caps), injection screening of each tool output "
        "(off in the third row) and the run's trace spans.",
    ]
    if acc:
        lines += ["", f"## Tool-call accuracy ({acc[0]['n']} single-tool tasks, 7 tools offered, tool_choice auto)", "",
                  "| model | right tool | right tool + arguments | time (s) |", "|---|---|---|---|"]  # fmt: skip
        for a in acc:
            lines.append(f"| {a['model']} | {a['tool']:.3f} | {a['tool_and_args']:.3f} | {a['seconds']:.0f} |")
        misses = acc[0]["misses"]
        lines += ["", "`local` is SmolLM2-135M-Instruct (Q4) through llama.cpp's ChatML function-calling grammar: a "
                  "floor figure for the plumbing, not a model to run agents with (llama-cpp-python's ChatML "
                  "function calling ignores max_tokens for the arguments, so a runaway argument string runs to the "
                  "end of the context: that is where the time goes). First misses of local: "
                  + "; ".join(misses[:10]) + (" …" if len(misses) > 10 else "")]  # fmt: skip
    tool_acc = f"{acc[0]['tool_and_args']:.3f}" if acc else "nan"
    if not acc and carried is not None:
        section, tool_acc = carried
        lines += ["", *section]
    lines += [
        "",
        "## Run",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; took "
        f"{(time.time() - started) / 60:.1f} min; load average (1/5/15 min) before: {load_before}, after: {load()} "
        "(2 cores shared with other work: wall times and runs/s move with it, compare within one run).",
        f"- Versions: portico {version('portico')}, langgraph {version('langgraph')}, langchain-openai "
        f"{version('langchain-openai')}, openai-agents {version('openai-agents')}, openai {version('openai')}, "
        f"Python {sys.version.split()[0]}.",
        "- Re-run: `make bench-agents` (BENCH_SEQ, BENCH_SECONDS; BENCH_SKIP_ACCURACY=1 keeps the last accuracy "
        "section; AGENT_EVAL_BASE_URL/MODEL/API_KEY for a stronger "
        "model's accuracy).",
        "",
        f"agents overhead_p50_ms={cpu_ms(p, 50):.3f} overhead_p99_ms={cpu_ms(p, 99):.3f} rps={p.rps:.1f} "
        f"rps_langgraph={lg.rps:.1f} rps_agents_sdk={sdk.rps:.1f} tool_acc_local={tool_acc}",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--serve", nargs=2, metavar=("KIND", "PORT"))
    a = ap.parse_args()
    if a.serve:
        serve(a.serve[0], int(a.serve[1]))
    else:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the server processes are stopped on a kill
        asyncio.run(main())
