"""``portico router train`` / ``calibrate`` on files, with a fake embedder in place of MiniLM."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import portico.routing.local_embed as local_embed
from portico.cli import app
from portico.routing.store import load, load_threshold, versions
from tests.unit.test_routing import chat_prompt, embed, math_prompt, synthetic


@pytest.fixture(autouse=True)
def fake_embedder(monkeypatch):
    monkeypatch.setattr(local_embed, "local_embed_fn", lambda batch_size=64: embed)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_train_then_calibrate(tmp_path):
    rows = [
        {
            "prompt": r.prompt,
            "model_a": r.model_a,
            "model_b": r.model_b,
            "winner": {"model_a": r.model_a, "model_b": r.model_b, "tie": "tie"}[r.winner],
        }  # winner by name
        for r in synthetic()
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = str(tmp_path / "routers")
    runner = CliRunner()
    res = runner.invoke(app, ["router", "train", data, "--name", "demo", "--out", out])
    assert res.exit_code == 0, res.output
    assert "strong=big" in res.output and "v1" in res.output
    assert versions(out, "demo") == [1]
    model = load(out, "demo")
    assert (model.strong, model.weak) == ("big", "small")

    prompts = [{"prompt": math_prompt(i)} for i in range(400, 410)]
    prompts += [{"messages": [{"role": "user", "content": chat_prompt(i)}]} for i in range(400, 430)]
    pfile = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    res = runner.invoke(app, ["router", "calibrate", "--name", "demo", "--strong-share", "0.25", "--dir", out, pfile])
    assert res.exit_code == 0, res.output
    assert "25.0% of 40 prompts" in res.output
    t = load_threshold(out, "demo", 0.25)
    texts = [math_prompt(i) for i in range(400, 410)]
    assert all(model.p_strong_wins(embed([x])[0], x) >= t for x in texts)


def test_train_rejects_bad_rows(tmp_path):
    data = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "x", "model_a": "a", "model_b": "b", "winner": "c"}])
    res = CliRunner().invoke(app, ["router", "train", data, "--out", str(tmp_path)])
    assert res.exit_code == 2
    assert "bad.jsonl:1" in res.output


def test_train_with_per_domain_corrections(tmp_path):
    from tests.unit.test_routing import _length_records

    rows = [
        {"prompt": r.prompt, "model_a": r.model_a, "model_b": r.model_b, "winner": r.winner, "domain": r.domain}
        for r in _length_records()
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    out = str(tmp_path / "routers")
    res = CliRunner().invoke(app, ["router", "train", data, "--out", out, "--domain-correction-min", "150"])
    assert res.exit_code == 0, res.output
    assert set(load(out, "default").domain_corrections) == {"chat"}  # 'math' has 100 prompts
    res = CliRunner().invoke(app, ["router", "train", data, "--out", out, "--domain-correction-min", "-1"])
    assert res.exit_code == 2 and "--domain-correction-min" in res.output, res.output
