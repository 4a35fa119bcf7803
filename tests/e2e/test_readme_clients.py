"""The README's client snippets under "Use it from…" run as written against a real ``portico serve``, with only the
address changed, so the table there stays true. (The chat snippet at the top streams without a token cap, minutes
on a busy machine; the same calls are covered with caps in ``test_local.py``.)"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
USE_IT_FROM = README.split("## Use it from", 1)[1].split("\n## ", 1)[0]
SNIPPETS = {f"use-it-from {i}": b for i, b in enumerate(re.findall(r"```python\n(.*?)```", USE_IT_FROM, flags=re.S))}


def test_the_use_it_from_section_has_the_responses_and_anthropic_snippets() -> None:
    joined = "\n".join(SNIPPETS.values())
    for call in ("client.responses.create", "client.responses.stream",
                 "previous_response_id", "claude.messages.create", "claude.messages.stream",
                 "claude.messages.count_tokens"):  # fmt: skip
        assert call in joined


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_snippet_runs(name: str, portico: str) -> None:
    code = SNIPPETS[name].replace("http://127.0.0.1:8080", portico)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README:{name}", "exec"), {})
    assert out.getvalue().strip()
