"""Summarize small, then send big: SciFact claims over their cited abstracts, answered by a "big" model directly
and after a small model condensed the abstracts (the ``condense`` step, ``what: history``: the abstracts are the
earlier turn, the claim question the last one, so the question reaches the big model untouched).

Models: the small one is the packaged local model (SmolLM2-135M through llama.cpp). The big one is any
OpenAI-compatible model from the environment (PORTICO_BENCH_BIG_URL, _MODEL, _KEY, _PRICE_IN, _PRICE_OUT USD per
1M tokens), else the same local model priced as a big one: then the token and cost numbers hold, but the answers
come from a 135M model. Prices (USD per 1M tokens, input/output) are assumptions stated in the results: small
0.10/0.40, big 2.50/10.00 unless set.

Agreement: the share of claims where the two answers name the same label (SUPPORT / CONTRADICT / other), by exact
match on the label the answer names first. No judge model compares the answers. Accuracy against SciFact's gold
labels is given for both. Data: $PORTICO_DATA/beir/scifact (measurement only; nothing is copied).

Run: make bench-condense (env CONDENSE_N claims, default 20). Results: bench/results/condense.md."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

from portico.config.loader import validate
from portico.pipeline import RequestContext
from portico.protocol.chat import ChatCompletionRequest
from portico.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("PORTICO_DATA", str(ROOT.parent / "shared" / "data"))) / "beir" / "scifact"
OUT = ROOT / "bench" / "results" / "condense.md"
SMALL_PRICE = {"input": 0.10, "output": 0.40}
QUESTION = ("Claim: {claim}\n\nDo the abstracts above SUPPORT or CONTRADICT the claim? "
            "Answer with exactly one word: SUPPORT or CONTRADICT.")  # fmt: skip
CONDENSE = {"use": "condense", "model": "small", "what": "history", "when": "tokens.input > 300", "target_tokens": 160}


def claims(n: int) -> list[dict[str, Any]]:
    """The first n test claims with a gold label, each with its cited abstracts (title and text)."""
    queries = {r["_id"]: r for r in map(json.loads, (DATA / "queries.jsonl").open())}
    cited: dict[str, list[str]] = {}
    for line in list((DATA / "qrels" / "test.tsv").open())[1:]:
        q, d, _ = line.split("\t")
        cited.setdefault(q, []).append(d)
    picked = [q for q in sorted(cited, key=int) if queries[q]["metadata"]][:n]
    need = {d for q in picked for d in cited[q]}
    corpus = {}
    for line in (DATA / "corpus.jsonl").open():
        r = json.loads(line)
        if r["_id"] in need:
            corpus[r["_id"]] = f"{r['title']}\n{r['text']}"
    out = []
    for q in picked:
        labels = {v[0]["label"] for v in queries[q]["metadata"].values()}
        out.append({"id": q, "claim": queries[q]["text"], "abstracts": [corpus[d] for d in cited[q]],
                    "gold": labels.pop() if len(labels) == 1 else "MIXED"})  # fmt: skip
    return out


def config(state: str) -> tuple[dict[str, Any], str]:
    local = {"provider": "local", "n_ctx": 4096, "n_threads": 1}
    url = os.environ.get("PORTICO_BENCH_BIG_URL")
    price = {"input": float(os.environ.get("PORTICO_BENCH_BIG_PRICE_IN", "2.5")),
             "output": float(os.environ.get("PORTICO_BENCH_BIG_PRICE_OUT", "10"))}  # fmt: skip
    if url:
        big = {"provider": "openai", "base_url": url, "model": os.environ.get("PORTICO_BENCH_BIG_MODEL", "gpt-4o"),
               "api_key": os.environ.get("PORTICO_BENCH_BIG_KEY", "none"), "price": price, "name": "big"}  # fmt: skip
        label = f"{big['model']} at {url}"
    else:
        big = {**local, "price": price, "name": "big"}
        label = "the local SmolLM2-135M, priced as a big model (no big model configured)"
    cfg = {
        "state_dir": state,
        "cache": {"enabled": False},
        "tracing": {"sample_rate": 0.0},
        "models": [{"name": "small", "deployments": [{**local, "price": SMALL_PRICE, "name": "small"}]},
                   {"name": "big", "deployments": [big]}],
        "applications": [{"name": "direct", "model": "big"},
                         {"name": "condensed", "model": "big", "steps": [CONDENSE]}],
    }  # fmt: skip
    return cfg, label


def label_of(answer: str) -> str:
    """SUPPORT or CONTRADICT, whichever the answer names first; OTHER when it names neither."""
    text = answer.upper()
    found = [(text.find(w), w) for w in ("SUPPORT", "CONTRADICT") if w in text]
    return min(found)[1] if found else "OTHER"


async def ask(rt: Runtime, app: str, c: dict[str, Any]) -> dict[str, Any]:
    abstracts = "\n\n".join(f"[{i + 1}] {a}" for i, a in enumerate(c["abstracts"]))
    req = ChatCompletionRequest.model_validate({"model": app, "temperature": 0, "max_tokens": 8, "messages": [
        {"role": "user", "content": f"Scientific abstracts:\n\n{abstracts}"},
        {"role": "assistant", "content": "I have read the abstracts."},
        {"role": "user", "content": QUESTION.format(claim=c["claim"])}]})  # fmt: skip
    pipeline, name = rt.pipeline_for(app)
    ctx = RequestContext(request=req, request_id=uuid.uuid4().hex, model=app, application=name)
    t0 = time.perf_counter()
    await pipeline.run(ctx)
    note = ctx.state.get("trace.notes", {}).get("condense", {})
    answer = ctx.response["choices"][0]["message"].get("content") or "" if ctx.response else ""
    return {
        "label": label_of(answer),
        "big_in": (ctx.usage or {}).get("prompt_tokens", 0),
        "small_in": note.get("condense_input_tokens") or 0,
        "condensed": bool(note.get("condensed")),
        "cost": rt.prices.request_cost(ctx),  # the answer plus the condense call (booked as a step call)
        "seconds": time.perf_counter() - t0,
    }


async def main() -> None:
    n = int(os.environ.get("CONDENSE_N", "20"))
    if not DATA.exists():
        raise SystemExit(f"SciFact not found at {DATA} (set PORTICO_DATA)")
    items = claims(n)
    state = f"/tmp/portico-bench-condense-{os.getpid()}"
    cfg, big_label = config(state)
    rt = Runtime(validate(cfg))
    await rt.start()
    rows = []
    try:
        for c in items:
            d = await ask(rt, "direct", c)
            k = await ask(rt, "condensed", c)
            rows.append((c, d, k))
    finally:
        await rt.close()
    write(rows, big_label)


def pct(a: float, b: float) -> float:
    return 100.0 * (1 - a / b) if b else 0.0


def write(rows: list[tuple[dict, dict, dict]], big_label: str) -> None:
    n = len(rows)
    big_d = statistics.mean(d["big_in"] for _, d, _ in rows)
    big_k = statistics.mean(k["big_in"] for _, _, k in rows)
    small_k = statistics.mean(k["small_in"] for _, _, k in rows)
    cost_d = statistics.mean(d["cost"] for _, d, _ in rows)
    cost_k = statistics.mean(k["cost"] for _, _, k in rows)
    agree = sum(d["label"] == k["label"] for _, d, k in rows) / n
    acc_d = sum(d["label"] == c["gold"] for c, d, _ in rows) / n
    acc_k = sum(k["label"] == c["gold"] for c, _, k in rows) / n
    condensed = sum(k["condensed"] for _, _, k in rows)
    dist = {m: {lab: sum(r[i]["label"] == lab for r in rows) for lab in ("SUPPORT", "CONTRADICT", "OTHER")}
            for m, i in (("direct", 1), ("condensed", 2))}  # fmt: skip
    lines = [
        "# Summarize small, then send big: the condense step on SciFact",
        "",
        f"{n} SciFact test claims (the first with a gold label), each over its cited abstracts; the question asks "
        "for SUPPORT or CONTRADICT. Small model: the local SmolLM2-135M (llama.cpp); big model: "
        f"{big_label}. Condense: `{json.dumps(CONDENSE)}`.",
        f"Assumed prices, USD per 1M tokens in/out: small {SMALL_PRICE['input']}/{SMALL_PRICE['output']}, "
        "big per PORTICO_BENCH_BIG_PRICE_IN/OUT (default 2.5/10).",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load (uptime) "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        "| | direct | condensed |",
        "| --- | ---: | ---: |",
        f"| big model input tokens per answer (mean) | {big_d:.0f} | {big_k:.0f} |",
        f"| small model input tokens per answer (mean) | 0 | {small_k:.0f} |",
        f"| input tokens in all, both models (mean) | {big_d:.0f} | {big_k + small_k:.0f} |",
        f"| USD per answer (mean, both calls) | {cost_d:.7f} | {cost_k:.7f} |",
        f"| accuracy against SciFact's gold label | {acc_d:.3f} | {acc_k:.3f} |",
        f"| answers SUPPORT / CONTRADICT / other | {dist['direct']['SUPPORT']} / {dist['direct']['CONTRADICT']} / "
        f"{dist['direct']['OTHER']} | {dist['condensed']['SUPPORT']} / {dist['condensed']['CONTRADICT']} / "
        f"{dist['condensed']['OTHER']} |",
        f"| seconds per claim (mean) | {statistics.mean(d['seconds'] for _, d, _ in rows):.2f} | "
        f"{statistics.mean(k['seconds'] for _, _, k in rows):.2f} |",
        "",
        f"Condensed: {condensed} of {n} claims (the others were under the `when` threshold or the summary was not "
        "shorter). Agreement is exact match of the label each answer names first; no judge model was configured, so "
        "nothing compares the answers' meaning. With the 135M model as the big one the answers are close to a "
        "constant, which inflates agreement: read the label counts beside it. tokens_saved_pct counts the big "
        "model's input; the small model reads the whole text, so the cost falls only as far as its tokens are "
        "cheaper.",
        "",
        f"condense tokens_saved_pct={pct(big_k, big_d):.1f} cost_saved_pct={pct(cost_k, cost_d):.1f} "
        f"agreement={agree:.3f}",
    ]
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    asyncio.run(main())
