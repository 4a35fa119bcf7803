"""Which CEL library evaluates pipeline conditions: ``common-expression-language`` (Rust, PyO3) or ``cel-python``
(pure Python on lark). Compile time, evaluation time per call and correctness on the conditions Portico's
recipes use, over the same activation (the view a condition sees). Results: bench/results/cel.md.

Run: python bench/cel_libs.py (both packages installed; no network, no model). Not named cel.py: that would shadow
the cel module."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

VIEW: dict[str, Any] = {
    "request": {"metadata": {"tier": "gold", "region": "eu"}, "model": "support", "stream": False},
    "caller": {"key": "alice", "user": "u-1"},
    "intent": "billing",
    "route": "gpt-large",
    "cache": {"status": "miss"},
    "guardrails": {"findings": ["pii"], "blocked": False},
    "retrieval": {"count": 3, "top_score": 0.42, "scores": [0.42, 0.3, 0.1]},
    "output": {"text": "Answer: 42 is the answer.", "checks": {"passed": False, "failed": ["must_match"]}},
    "tokens": {"input": 7200, "output": 12},
    "iteration": 2,
}

# (expression, expected value over VIEW)
CASES: list[tuple[str, Any]] = [
    ('request.metadata.tier == "gold"', True),
    ("retrieval.top_score < 0.5 && iteration < 3", True),
    ("output.checks.passed", False),
    ('"pii" in guardrails.findings', True),
    ('intent == "billing" || route.startsWith("gpt")', True),
    ('size(output.text) > 20 && output.text.contains("Answer:")', True),
    ("tokens.input > 6000", True),
    ("retrieval.scores.exists(s, s > 0.4)", True),
    ("has(request.metadata.vip)", False),
    ('caller.key in ["alice", "bob"]', True),
    ('cache.status == "hit" ? false : retrieval.count >= 3', True),
    ("iteration * 2 + 1 == 5", True),
]

# Conditions that must fail at evaluation (a missing map key, a type mismatch), not answer something.
ERRORS = ['request.metadata.vip == "x"', 'tokens.input > "many"']


def rust() -> tuple[Callable[[str], Any], Callable[[Any, dict[str, Any]], Any]]:
    import cel

    return cel.compile, lambda program, view: program.execute(view)


def python() -> tuple[Callable[[str], Any], Callable[[Any, dict[str, Any]], Any]]:
    import celpy
    from celpy.adapter import json_to_cel

    env = celpy.Environment()

    def compile_(text: str) -> Any:
        return env.program(env.compile(text))

    def run(program: Any, view: dict[str, Any]) -> Any:
        # cel-python evaluates over its own types: the view is converted per call (part of its cost).
        return program.evaluate({k: json_to_cel(v) for k, v in view.items()})

    return compile_, run


def timed(fn: Callable[[], Any], n: int) -> float:
    """Median of 5 runs of ``n`` calls, in microseconds per call."""
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


Library = Callable[[], tuple[Callable[[str], Any], Callable[[Any, dict[str, Any]], Any]]]


def measure(name: str, factory: Library) -> dict:
    compile_, run = factory()
    correct, wrong = 0, []
    compile_us, eval_us, trimmed_us = [], [], []
    for text, expected in CASES:
        compile_us.append(timed(lambda text=text: compile_(text), 20))
        program = compile_(text)
        try:
            got = run(program, VIEW)
        except Exception as e:  # a wrong answer is a result here
            got = f"error: {type(e).__name__}: {e}"[:120]
        # cel-python answers its own BoolType (an int subclass); both are a boolean answer.
        if got == expected and type(got).__name__ in ("bool", "BoolType"):
            correct += 1
        else:
            wrong.append(f"`{text}` → {got!r}")
        eval_us.append(timed(lambda program=program: run(program, VIEW), 200))
        # Portico builds only the roots a condition names: the cost a request pays.
        small = {k: v for k, v in VIEW.items() if k in text}
        trimmed_us.append(timed(lambda program=program, small=small: run(program, small), 200))
    for text in ERRORS:
        try:
            got = run(compile_(text), VIEW)
            wrong.append(f"`{text}` → {got!r} (expected an error)")
        except Exception:  # the expected outcome
            correct += 1
    return {"name": name, "compile": statistics.median(compile_us), "eval": statistics.median(eval_us),
            "eval_max": max(eval_us), "trimmed": statistics.median(trimmed_us),
            "correct": correct, "wrong": wrong}  # fmt: skip


def main() -> None:
    import importlib.metadata as md

    rows = [measure("common-expression-language " + md.version("common-expression-language"), rust),
            measure("cel-python " + md.version("cel-python"), python)]  # fmt: skip
    lines = [
        "# CEL libraries for pipeline conditions",
        "",
        f"{len(CASES)} conditions of the shapes the recipes use, over one activation (the condition view).",
        f"Python {sys.version.split()[0]}; load (uptime): {os.getloadavg()[0]:.2f}. Median of 5 runs; "
        "compile: 20 calls, evaluate: 200 calls per condition.",
        "",
        "| library | compile µs (median over conditions) | evaluate µs (median) | evaluate µs (slowest condition) "
        "| evaluate µs (view of the named roots only) | correct |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['name']} | {r['compile']:.1f} | {r['eval']:.1f} | {r['eval_max']:.1f} | "
                     f"{r['trimmed']:.1f} | {r['correct']}/{len(CASES) + len(ERRORS)} |")  # fmt: skip
    for r in rows:
        for w in r["wrong"]:
            lines.append(f"\n{r['name']} wrong: {w}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
