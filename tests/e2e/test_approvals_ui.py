"""The approvals page in a real browser (Debian chromium via playwright-core, tests/browser): a pending write
action is edited and approved (the tool runs once, with the edited arguments), another is denied (it never runs)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import uvicorn

from portico.actions import ToolContext
from portico.actions.tool import SingleTool
from portico.config.loader import validate
from portico.protocol.chat import Message
from portico.server.app import create_app
from tests.support import free_port
from tests.unit.test_actions_contract import Recorder

BROWSER_DIR = Path(__file__).resolve().parents[1] / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
MASTER = "sk-master-approvals-ui"


async def test_approve_with_edits_and_deny_in_the_browser(tmp_path: Path) -> None:
    if not (BROWSER_DIR / "node_modules" / "playwright-core").is_dir() or not Path(CHROMIUM).exists():
        pytest.fail("browser test prerequisites missing: run `make test` (npm ci in tests/browser, apt chromium)")
    cfg = validate({"state_dir": str(tmp_path / "state"), "auth": {"master_key": MASTER}, "models": [
        {"name": "m", "deployments": [{"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}]}]})  # fmt: skip
    app = create_app(cfg)
    rt = app.state.runtime
    tool = Recorder("send_email", write=True)
    rt.tools.sources.append(SingleTool(tool))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    try:
        convo = SimpleNamespace(request=SimpleNamespace(messages=[
            Message(role="user", content="Please email order A1 to the customer")]))  # fmt: skip
        ctx = ToolContext("req-ui", application="support-agent", request=convo, reason="Sending the order email.")
        approve_id = (await rt.approvals.check(tool, {"order_id": "A1"}, ctx)).approval_id
        deny_id = (await rt.approvals.check(tool, {"order_id": "A2"}, ctx)).approval_id
        proc = await asyncio.create_subprocess_exec(
            "node", str(BROWSER_DIR / "approvals.mjs"), f"http://127.0.0.1:{port}", MASTER, str(tmp_path),
            approve_id, deny_id, cwd=BROWSER_DIR, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        seen = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {"error": err.decode()[-3000:]}
        assert "error" not in seen, seen["error"]
        assert set(seen["listed"]) == {approve_id, deny_id}
        assert json.loads(seen["argumentsShown"]) == {"order_id": "A1"}
        assert any("email order A1" in m for m in seen["conversation"])
        assert seen["result"] == "order EDITED" and seen["consoleErrors"] == []
        assert dict(seen["history"]) == {approve_id: "executed", deny_id: "denied"}
        assert [c[0] for c in tool.calls] == [{"order_id": "EDITED"}]
        row = await rt.approvals.get(approve_id)
        assert row["original_arguments"] == {"order_id": "A1"} and row["decided_by"] == "operator"
        assert (await rt.approvals.get(deny_id))["note"] == "wrong customer"
    finally:
        server.should_exit = True
        await serving
