"""The README's client snippets under "Use it from…" run as written against a real ``portico serve``, with only the
address changed, so the table there stays true: Python ones in this interpreter (LlamaIndex's in its own venv,
tests/clients-py/.venv), the JavaScript one under Node with the JS SDK of tests/clients-js. (The chat snippet at the
top streams without a token cap, minutes on a busy machine; the same calls are covered with caps in
``test_local.py``.)"""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
USE_IT_FROM = README.split("## Use it from", 1)[1].split("\n## ", 1)[0]
SNIPPETS = {f"use-it-from {i}": b for i, b in enumerate(re.findall(r"```python\n(.*?)```", USE_IT_FROM, flags=re.S))}
JS_SNIPPETS = re.findall(r"```js\n(.*?)```", USE_IT_FROM, flags=re.S)


def test_the_use_it_from_section_has_the_responses_and_anthropic_snippets() -> None:
    joined = "\n".join(SNIPPETS.values())
    for call in ("client.responses.create", "client.responses.stream",
                 "previous_response_id", "claude.messages.create", "claude.messages.stream",
                 "claude.messages.count_tokens", "Runner.run_sync", "ChatOpenAI(", "ChatAnthropic(",
                 "OpenAIEmbeddings(", "OpenAILike("):  # fmt: skip
        assert call in joined
    assert len(JS_SNIPPETS) == 1 and "client.responses.create" in JS_SNIPPETS[0]


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_snippet_runs(name: str, portico: str) -> None:
    code = SNIPPETS[name].replace("http://127.0.0.1:8080", portico)
    if "llama_index" in code:  # its OpenAI integration pins openai<3: it lives in a venv of its own
        py = ROOT / "tests" / "clients-py" / ".venv" / "bin" / "python"
        assert py.exists(), "run `make clients`"
        run = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300)
        assert run.returncode == 0 and run.stdout.strip(), run.stderr[-3000:]
        return
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README:{name}", "exec"), {})
    assert out.getvalue().strip()


def test_js_snippet_runs(portico: str, tmp_path: Path) -> None:
    js = ROOT / "tests" / "clients-js"
    assert (js / "node_modules" / "openai").is_dir(), "run `make clients`"
    script = js / f".readme-{tmp_path.name}.mjs"  # beside node_modules, so `import "openai"` resolves
    script.write_text(JS_SNIPPETS[0].replace("http://127.0.0.1:8080", portico))
    try:
        run = subprocess.run(["node", script.name], cwd=js, capture_output=True, text=True, timeout=300)
    finally:
        script.unlink()
    assert run.returncode == 0 and run.stdout.strip(), run.stderr[-3000:]
