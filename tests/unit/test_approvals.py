"""The approval queue on SQLite and PostgreSQL: no write without a recorded approval, exactly once, durable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace

import httpx
import pytest

from portico.actions import Toolbox, ToolContext
from portico.actions.approvals import ApprovalQueue, ApprovalStore
from portico.actions.tool import SingleTool
from portico.config.loader import ConfigError, validate
from portico.config.tools import ApprovalConfig
from portico.protocol.errors import Conflict, InvalidRequest, NotFound
from portico.storage.db import Database
from tests.unit.test_actions_contract import Recorder

CTX = ToolContext(request_id="req-9", caller={"key": "team-a", "key_id": "key_a"}, application="agent",
                  reason="The user asked me to send it.")  # fmt: skip


class Keys:
    """The key store as the queue sees it: key_a may use every tool; key_gone was revoked."""

    def __init__(self, tools: tuple[str, ...] | None = ("*",)) -> None:
        self.tools = tools

    async def get(self, key_id: str) -> SimpleNamespace | None:
        return SimpleNamespace(active=key_id != "key_gone", tools=self.tools)


ANON = ToolContext(request_id="req-10")  # auth off, no key: as on a loopback single-user install


def make(db: Database, tool: Recorder, keys: Keys | None = None, **policy: object) -> ApprovalQueue:
    box = Toolbox([SingleTool(tool)])
    q = ApprovalQueue(ApprovalStore(db), box, {tool.name: ApprovalConfig(**policy)}, keys=keys or Keys())
    box.gate = q
    return q


async def ask(q: ApprovalQueue, tool: Recorder, args: dict | None = None) -> str:
    d = await q.check(tool, args or {"order_id": "A1"}, CTX)
    assert not d.allowed and d.status == "pending_approval" and d.approval_id in d.message
    return d.approval_id


async def test_pending_action_runs_once_on_approval(store_db: Database) -> None:
    tool = Recorder("send_email", write=True)
    q = make(store_db, tool)
    aid = await ask(q, tool)
    assert tool.calls == []
    row = await q.get(aid)
    assert row["status"] == "pending" and row["key_name"] == "team-a" and row["reason"].startswith("The user")
    done = await q.approve(aid, "alice")
    assert done["status"] == "executed" and done["result"]["content"] == "order A1" and done["decided_by"] == "alice"
    assert len(tool.calls) == 1 and tool.calls[0][1].idempotency_key == aid
    with pytest.raises(Conflict, match="executed, not pending"):
        await q.approve(aid, "bob")
    with pytest.raises(Conflict):
        await q.deny(aid, "bob")
    actions = [a["action"] for a in await q.store.audit_log(aid)]
    assert actions == ["executed", "approved", "requested"]
    assert len(tool.calls) == 1


async def test_concurrent_approvals_from_two_replicas_execute_once(store_db: Database) -> None:
    tool = Recorder("place_order", write=True)
    a, b = make(store_db, tool), make(store_db, tool)
    ids = [await ask(a, tool, {"order_id": f"O{i}"}) for i in range(5)]

    async def approve(q: ApprovalQueue, aid: str) -> str:
        try:
            return (await q.approve(aid, "op"))["status"]
        except Conflict:
            return "conflict"

    results = await asyncio.gather(*(approve(q, aid) for aid in ids for q in (a, b, a, b)))
    assert results.count("executed") == 5 and results.count("conflict") == 15
    assert sorted(c[0]["order_id"] for c in tool.calls) == [f"O{i}" for i in range(5)]


async def test_illegal_transitions_are_refused(store_db: Database) -> None:
    store = ApprovalStore(store_db)
    for frm, to in [("pending", "executing"), ("pending", "executed"), ("approved", "executed"),
                    ("denied", "approved"), ("executed", "executing"), ("expired", "approved")]:  # fmt: skip
        with pytest.raises(ValueError, match="illegal transition"):
            await store.transition("x", frm, to)


async def test_deny_expiry_and_edits(store_db: Database) -> None:
    tool = Recorder("refund", write=True)
    q = make(store_db, tool, expires=0.3)
    denied = await ask(q, tool)
    row = await q.deny(denied, "carol", "not this customer")
    assert row["status"] == "denied" and row["note"] == "not this customer"
    with pytest.raises(Conflict, match="denied"):
        await q.approve(denied, "carol")
    late = await ask(q, tool)
    await asyncio.sleep(0.4)
    with pytest.raises(Conflict, match="expired") as e:
        await q.approve(late, "carol")
    assert e.value.code == "approval_expired"
    assert [r["id"] for r in await q.list("expired")] == [late]
    q = make(store_db, tool)
    edited = await ask(q, tool)
    with pytest.raises(InvalidRequest, match="qty"):
        await q.approve(edited, "dave", {"order_id": "A1", "qty": 0})
    assert (await q.get(edited))["status"] == "pending"
    row = await q.approve(edited, "dave", {"order_id": "B2"})
    assert row["status"] == "executed" and row["arguments"] == {"order_id": "B2"}
    assert row["original_arguments"] == {"order_id": "A1"} and tool.calls[-1][0] == {"order_id": "B2"}
    assert "edited" in [a["action"] for a in await q.store.audit_log(edited)]
    with pytest.raises(NotFound):
        await q.approve("appr_nope", "x")


async def test_pending_survives_a_restart_and_crashes_are_never_retried(store_db: Database) -> None:
    tool = Recorder("send_email", write=True)
    aid = await ask(make(store_db, tool), tool)
    q = make(store_db, tool)  # a new process on the same database
    assert [r["id"] for r in await q.list("pending")] == [aid]
    # A process approved an action and died before running it: recovery runs it, once.
    orphan = await ask(q, tool, {"order_id": "orphan"})
    assert await q.store.transition(orphan, "pending", "approved", decided_at=time.time() - 120, decided_by="op")
    # Another died while its call ran: nobody knows whether it happened, so a human must look.
    lost = await ask(q, tool, {"order_id": "lost"})
    assert await q.store.transition(lost, "pending", "approved", decided_at=time.time(), decided_by="op")
    assert await q.store.transition(lost, "approved", "executing", started_at=time.time() - 3600)
    assert await make(store_db, tool).recover() == {"orphans_run": 1, "marked_unknown": 1}
    assert (await q.get(orphan))["status"] == "executed" and (await q.get(lost))["status"] == "unknown"
    assert [c[0]["order_id"] for c in tool.calls] == ["orphan"]
    assert await make(store_db, tool).recover() == {"orphans_run": 0, "marked_unknown": 0}


async def test_user_decisions_only_on_own_actions(store_db: Database) -> None:
    tool = Recorder("book", write=True)
    q = make(store_db, tool, by="user")
    aid = await ask(q, tool)
    with pytest.raises(NotFound):
        await q.approve(aid, "team-b", caller_key_id="key_b")
    assert (await q.approve(aid, "team-a", caller_key_id="key_a"))["status"] == "executed"
    op_only = make(store_db, tool)
    other = await ask(op_only, tool)
    with pytest.raises(NotFound):
        await op_only.approve(other, "team-a", caller_key_id="key_a")


async def test_failed_call_is_recorded_not_retried(store_db: Database) -> None:
    tool = Recorder("charge", write=True, behave="raise")
    q = make(store_db, tool)
    row = await q.approve(await ask(q, tool), "op")
    assert row["status"] == "failed" and "backend exploded" in row["result"]["content"] and len(tool.calls) == 1


def test_unapproved_writes_need_an_explicit_opt_in() -> None:
    base = {"models": [{"name": "m", "deployments": [{"provider": "openai", "base_url": "http://x/v1"}]}]}
    tool = {"name": "wipe", "kind": "http", "write": True, "approval": {"by": "none"}}
    with pytest.raises(ConfigError, match="i_understand_unapproved_writes"):
        validate({**base, "tools": [tool]})
    cfg = validate({**base, "tools": [{**tool, "i_understand_unapproved_writes": True}]})
    assert cfg.tools[0].approval.by == "none"
    cfg = validate({**base, "tools": [{"name": "t", "kind": "http", "write": True, "approval": {"expires": "30m"}}]})
    assert cfg.tools[0].approval.expires == 1800 and cfg.tools[0].approval.by == "operator"
    with pytest.raises(ConfigError, match="duration"):
        validate({**base, "tools": [{"name": "t", "kind": "http", "approval": {"expires": "soon"}}]})


async def test_unapproved_write_runs_when_opted_in(store_db: Database) -> None:
    tool = Recorder("log_event", write=True)
    q = make(store_db, tool, by="none")
    d = await q.check(tool, {"order_id": "x"}, CTX)
    assert d.allowed and [a["action"] for a in await q.store.audit_log()] == ["unapproved_write"]


# ---- the admin API, in process ------------------------------------------------------------------------


@pytest.fixture
async def api(tmp_path) -> AsyncIterator[tuple[httpx.AsyncClient, object, Recorder]]:
    from portico.server.app import create_app

    cfg = validate({"state_dir": str(tmp_path), "models": [
        {"name": "m", "deployments": [{"provider": "openai", "base_url": "http://127.0.0.1:9/v1"}]}]})  # fmt: skip
    app = create_app(cfg)
    rt = app.state.runtime
    tool = Recorder("send_email", write=True)
    rt.tools.sources.append(SingleTool(tool))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://p.test") as c:
        yield c, rt, tool


async def test_admin_api(api) -> None:
    c, rt, tool = api
    aid = (await rt.approvals.check(tool, {"order_id": "A1"}, ANON)).approval_id
    r = await c.get("/admin/approvals", params={"status": "pending"})
    assert r.status_code == 200 and [a["id"] for a in r.json()["data"]] == [aid]
    assert (await c.get("/admin/approvals", params={"status": "bogus"})).status_code == 400
    r = await c.post(f"/admin/approvals/{aid}/approve", json={"arguments": {"order_id": 7}})
    assert r.status_code == 400 and "order_id" in r.json()["error"]["message"]
    r = await c.post(f"/admin/approvals/{aid}/approve", json={"by": "alice"})
    assert r.status_code == 200 and r.json()["status"] == "executed" and len(tool.calls) == 1
    r = await c.post(f"/admin/approvals/{aid}/approve")
    assert r.status_code == 409 and r.json()["error"]["code"] == "approval_decided"
    r = await c.get(f"/admin/approvals/{aid}")
    assert r.json()["status"] == "executed" and r.json()["audit"][0]["action"] == "executed"
    assert (await c.get("/admin/approvals/appr_missing")).status_code == 404
    other = (await rt.approvals.check(tool, {"order_id": "A2"}, ANON)).approval_id
    r = await c.post(f"/admin/approvals/{other}/deny", json={"reason": "no"})
    assert r.status_code == 200 and r.json()["status"] == "denied" and len(tool.calls) == 1


async def test_the_asking_keys_permissions_are_checked_again_at_execution(store_db: Database) -> None:
    tool = Recorder("send_email", write=True)
    stripped = make(store_db, tool, keys=Keys(tools=("lookup_*",)))  # the key lost the tool after asking
    row = await stripped.approve(await ask(stripped, tool), "op")
    assert row["status"] == "failed" and "may not use" in row["result"]["content"] and tool.calls == []
    q = make(store_db, tool)
    gone = await q.check(tool, {"order_id": "A"}, ToolContext("r", caller={"key": "x", "key_id": "key_gone"}))
    row = await q.approve(gone.approval_id, "op")
    assert row["status"] == "failed" and tool.calls == []


def test_tool_permissions() -> None:
    from portico.actions.permissions import tool_allowed

    read, write = Recorder("lookup_order"), Recorder("send_email", write=True)
    anonymous = {"key": None, "key_id": None}
    default = {"key": "k", "key_id": "key_1", "tools": None}
    listed = {"key": "k", "key_id": "key_1", "tools": ("lookup_*", "send_email")}
    only_reads = {"key": "k", "key_id": "key_1", "tools": ("lookup_*",)}
    assert tool_allowed(anonymous, read) and tool_allowed(anonymous, write)
    assert tool_allowed(default, read) and not tool_allowed(default, write)
    assert tool_allowed(listed, read) and tool_allowed(listed, write)
    assert tool_allowed(only_reads, read) and not tool_allowed(only_reads, write)
    assert not tool_allowed({"key": "k", "key_id": "key_1", "tools": ()}, read)


async def test_run_tool_refuses_a_tool_the_key_may_not_use() -> None:
    from portico.actions import run_tool

    tool = Recorder("lookup_order")
    ctx = ToolContext("r", caller={"key": "k", "key_id": "key_1", "tools": ("other",)})
    out = await run_tool(tool, {"order_id": "A"}, ctx, None)  # type: ignore[arg-type]
    assert out.status == "denied" and "may not use" in out.result.content and tool.calls == []


async def test_keys_carry_tools_through_the_admin_api(api) -> None:
    c, rt, _ = api
    r = await c.post("/admin/keys", json={"name": "agents", "tools": ["lookup_*", "send_email"]})
    assert r.status_code == 201 and r.json()["tools"] == ["lookup_*", "send_email"]
    rec = await rt.keys.lookup(r.json()["key"])
    assert rec.tools == ("lookup_*", "send_email")
    r = await c.patch(f"/admin/keys/{rec.id}", json={"tools": None})
    assert r.json()["tools"] is None


async def test_an_api_keys_table_from_before_the_tools_column_gains_it_by_upgrade(tmp_path) -> None:
    import sqlite3

    from portico.storage.migrate import SchemaError, upgrade

    path = tmp_path / "old.db"
    con = sqlite3.connect(path)  # an api_keys table from before the tools column existed
    con.execute("CREATE TABLE api_keys (id VARCHAR(40) PRIMARY KEY, name VARCHAR(200) NOT NULL, key_hash VARCHAR(64)"
                " NOT NULL UNIQUE, key_prefix VARCHAR(16) NOT NULL, models JSON, rpm INTEGER, tpm INTEGER, budget_usd"
                " FLOAT, budget_period VARCHAR(8), created_at FLOAT NOT NULL, revoked_at FLOAT)")  # fmt: skip
    con.execute("INSERT INTO api_keys VALUES ('key_1','old','h','pk-',NULL,NULL,NULL,NULL,NULL,1.0,NULL)")
    con.commit()
    con.close()
    db = Database(f"sqlite:///{path}")
    with pytest.raises(SchemaError, match="portico db upgrade"):
        await db.create_schema()  # start-up leaves an existing database alone (storage.migrate)
    await upgrade(db)
    await upgrade(db)  # idempotent
    await db.create_schema()
    from portico.storage.keys import all_keys

    rows = await all_keys(db)
    assert rows[0]["name"] == "old" and rows[0]["tools"] is None
    await db.close()


async def test_webhook_receives_the_action_after_it_ran(store_db: Database) -> None:
    from aiohttp import web

    from tests.support import free_port

    got: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        got.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        tool = Recorder("notify", write=True)
        q = make(store_db, tool, webhook=f"http://127.0.0.1:{port}/hook")
        aid = await ask(q, tool)
        await q.approve(aid, "op")
        await q.close()  # waits for the webhook's delivery
        assert [(g["id"], g["status"], g["result"]["content"]) for g in got] == [(aid, "executed", "order A1")]
    finally:
        await runner.cleanup()


async def test_a_returning_conversation_learns_of_denials_and_expiry(store_db: Database) -> None:
    from portico.actions.approvals import inband
    from portico.protocol.chat import Message

    tool = Recorder("refund", write=True)
    q = make(store_db, tool, expires=0.2)
    denied, expired = await ask(q, tool), await ask(q, tool)
    await q.deny(denied, "carol", "not eligible")
    await asyncio.sleep(0.3)
    convo = [Message(role="tool", tool_call_id="1", content=f"waits (approval id {denied})"),
             Message(role="tool", tool_call_id="2", content=f"waits (approval id {expired})"),
             Message(role="user", content="and now?")]  # fmt: skip
    note = await inband.updates(q, convo, [])
    assert note is not None and note.role == "system"
    assert f"Action {denied} (refund) was denied: not eligible." in note.text()
    assert f"Action {expired} (refund) expired without a decision" in note.text()
    assert await inband.updates(q, [Message(role="user", content="hi")], []) is None
    assert tool.calls == []
