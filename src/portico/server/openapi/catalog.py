"""Every served route, declared once for the OpenAPI document: ``Op(method, path, summary, response, …)``.

Examples are requests that work against the test server (tests/e2e/test_openapi.py walks them in this order and
validates each live answer against the document), so keep creates before the reads and deletes that use them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from portico.evaluation.feedback import FeedbackBody
from portico.protocol import schemas as s
from portico.protocol import schemas_clients as c
from portico.protocol import schemas_evals as e
from portico.protocol import schemas_sql as q
from portico.protocol.chat import ChatCompletionRequest
from portico.protocol.embeddings import EmbeddingRequest
from portico.protocol.messages import CountTokensRequest, MessagesRequest
from portico.protocol.responses import ResponsesRequest
from portico.server.admin import KeyCreate, KeyUpdate
from portico.server.approvals_api import Approve, Deny
from portico.server.evals_api import FromTraces
from portico.server.handoffs_api import HandoffCreate, HandoffUpdate
from portico.server.openapi.registry import Example, Op

# ---- query strings (documentation only: the handlers parse them and name a bad one in their 400) -------------

_Q = ConfigDict(extra="forbid")
WHEN = "ISO 8601 time or epoch seconds"


class UsageQuery(BaseModel):
    model_config = _Q
    group_by: str | None = Field(default=None, description="comma-separated: key, model, application, deployment…")
    since: str | None = Field(default=None, description=WHEN)
    until: str | None = Field(default=None, description=WHEN)
    key_id: str | None = None


class RequestsQuery(BaseModel):
    model_config = _Q
    limit: int = Field(default=50, ge=1, le=500)
    key: str | None = Field(default=None, description="key name")
    model: str | None = None
    application: str | None = None
    status: int | None = None
    q: str | None = Field(default=None, description="text search in prompts and answers")
    since: str | None = Field(default=None, description=WHEN)
    until: str | None = Field(default=None, description=WHEN)
    before: str | None = Field(default=None, description="page: traces older than this time")


class StatsQuery(BaseModel):
    model_config = _Q
    since: str | None = Field(default=None, description=WHEN + " (default: 24 hours before until)")
    until: str | None = Field(default=None, description=WHEN + " (default: now)")
    bucket: int | None = Field(default=None, ge=1, description="seconds (default: chosen from the window)")
    group_by: str = Field(default="model", description="model | key | application | deployment")


class HandoffsQuery(BaseModel):
    model_config = _Q
    status: str | None = Field(default=None, description="open | claimed | resolved")
    application: str | None = None
    limit: int = Field(default=50, ge=1, le=500)


class ApprovalsQuery(BaseModel):
    model_config = _Q
    status: str | None = Field(default=None, description="pending | approved | denied | expired | executing | …")
    limit: int = Field(default=100, ge=1, le=1000)


class DocumentsQuery(BaseModel):
    model_config = _Q
    limit: int = Field(default=100, ge=1, le=1000)
    after: str | None = Field(default=None, description="page: document ids after this one")


class InputItemsQuery(BaseModel):
    model_config = _Q
    limit: int = Field(default=20, ge=1, le=100)
    order: Literal["asc", "desc"] = Field(default="desc", description="desc: newest item first (as OpenAI's)")
    after: str | None = Field(default=None, description="page: items after this item id")


class EvalsQuery(BaseModel):
    model_config = _Q
    limit: int = Field(default=100, ge=1, le=1000)
    name: str | None = Field(default=None, description="only the runs of this eval")


class ExperimentsQuery(BaseModel):
    model_config = _Q
    since: str | None = Field(default=None, description=WHEN + " (default: all traffic)")


_CHAT = {"model": "oai", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 16}
_MCP_INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "docs", "version": "1"}},
}
_ASK = [{"role": "user", "content": "Say hello"}]
_RESP = "/v1/responses/{response_id}"
_RID = {"response_id": "resp_0123"}
# /v1/messages answers every error in Anthropic's shape ({type: "error", error: {type, message}}), statuses as ours.
_ANTHROPIC = {"tag": "anthropic", "error_model": c.AnthropicError}
_KB = "/v1/knowledge_bases"
_DOC = {"documents": [{"id": "doc-1", "text": "Portico routes requests to models.", "metadata": {"lang": "en"}}]}

OPS: list[Op] = [
    # ---- OpenAI-compatible ----------------------------------------------------------------------------------
    Op("POST", "/v1/chat/completions", "Create a chat completion (streams with stream: true)", s.ChatCompletion,
       ChatCompletionRequest, errors=(404, 429, 502, 503, 504), tag="openai", stream=s.ChatCompletionChunk,
       example=Example(_CHAT, headers={"x-request-id": "req-openapi-example"})),
    Op("POST", "/v1/embeddings", "Create embeddings", s.EmbeddingList, EmbeddingRequest,
       errors=(404, 429, 502, 503, 504), tag="openai",
       example=Example({"model": "local-embed", "input": ["hello", "world"]})),
    # Like every /v1 route: a key when auth is on; a key sees only the models it may use.
    Op("GET", "/v1/models", "List the models and applications the caller may use", s.ModelList, tag="openai",
       example=Example()),
    Op("GET", "/v1/models/{model}", "Get one model", s.Model, errors=(404,), tag="openai",
       example=Example(path={"model": "oai"})),
    Op("POST", "/v1/responses", "Create a response (Responses API; streams named events with stream: true)",
       c.ResponseObject, ResponsesRequest, errors=(404, 429, 502, 503, 504), tag="openai",
       stream=c.ResponseStreamEvent, stream_done=False,
       example=Example({"model": "oai", "input": "Say hello", "max_output_tokens": 16}, capture={"response_id": "id"})),
    Op("GET", _RESP, "Get a stored response (the key's own)", c.ResponseObject, errors=(400, 404), tag="openai",
       example=Example(path=_RID)),
    Op("GET", _RESP + "/input_items", "List a stored response's input items", c.InputItemList, query=InputItemsQuery,
       errors=(400, 404), tag="openai", example=Example(path=_RID, query={"limit": "10", "order": "asc"})),
    Op("DELETE", _RESP, "Delete a stored response", c.DeletedResponse, errors=(404,), tag="openai",
       example=Example(path=_RID)),
    # ---- Anthropic-compatible -------------------------------------------------------------------------------
    Op("POST", "/v1/messages", "Create a message (Anthropic's Messages API; errors in Anthropic's shape)",
       c.AnthropicMessage, MessagesRequest, errors=(404, 429, 502, 503, 504), stream=c.AnthropicStreamEvent,
       stream_done=False, example=Example({"model": "oai", "max_tokens": 16, "messages": _ASK}), **_ANTHROPIC),
    Op("POST", "/v1/messages/count_tokens", "Count a message request's input tokens (errors in Anthropic's shape)",
       c.TokenCount, CountTokensRequest, errors=(404,), example=Example({"model": "oai", "messages": _ASK}),
       **_ANTHROPIC),
    # ---- evaluation -----------------------------------------------------------------------------------------
    Op("POST", "/v1/feedback", "Judge a served request (value) or a pair of them (winner) on a configured metric",
       e.Feedback, FeedbackBody, errors=(404, 409), tag="evaluation",
       example=Example({"metric": "helpful", "request_id": "req-openapi-example", "value": True,
                        "feedback_id": "fb-openapi-example"})),
    Op("GET", "/admin/experiments", "Experiments: each variant's traffic and feedback with 95% CIs, and tests",
       e.ExperimentReportList, query=ExperimentsQuery, errors=(400,), auth="admin", tag="evaluation",
       example=Example()),
    Op("POST", "/admin/datasets/from-traces", "Build dataset items from traces (registered as a version with name)",
       e.DatasetFromTraces, FromTraces, auth="admin", tag="evaluation",
       example=Example({"name": "spec-traces", "limit": 10})),
    Op("GET", "/admin/datasets", "List datasets, every version", e.DatasetList, auth="admin", tag="evaluation",
       example=Example()),
    Op("GET", "/admin/evals", "List eval runs, newest first, with their headline scores", e.EvalRunBriefList,
       query=EvalsQuery, errors=(400,), auth="admin", tag="evaluation", example=Example(query={"limit": "10"})),
    Op("GET", "/admin/evals/{run_id}", "Get an eval run with every result and pairwise judgement", e.EvalRun,
       errors=(404,), auth="admin", tag="evaluation", example=Example(path={"run_id": "run_0123"}, status=404)),
    Op("POST", "/v1/sql_sources/{name}/query", "Ask a SQL source a question, or run one checked SELECT",
       q.SqlResult, q.SqlQuery, errors=(400, 404, 503), tag="sql",
       example=Example({"sql": "SELECT 1"}, path={"name": "no-such-source"}, status=404)),
    # ---- knowledge bases ------------------------------------------------------------------------------------
    Op("POST", _KB, "Create a knowledge base", s.KnowledgeBase, s.KnowledgeBaseCreate, status=201,
       errors=(409,), tag="knowledge", example=Example({"name": "spec-docs"}, status=201)),
    Op("GET", _KB, "List knowledge bases", s.KnowledgeBaseList, tag="knowledge", example=Example()),
    Op("GET", _KB + "/{kb}", "Get a knowledge base", s.KnowledgeBase, errors=(404,), tag="knowledge",
       example=Example(path={"kb": "spec-docs"})),
    Op("POST", _KB + "/{kb}/documents", "Add documents (JSON, or a multipart `file` upload)", s.IngestResultList,
       s.DocumentsIn, errors=(404,), tag="knowledge", example=Example(_DOC, path={"kb": "spec-docs"})),
    Op("GET", _KB + "/{kb}/documents", "List documents", s.DocumentList, query=DocumentsQuery, errors=(400, 404),
       tag="knowledge", example=Example(path={"kb": "spec-docs"}, query={"limit": "10"})),
    Op("POST", _KB + "/{kb}/search", "Search a knowledge base", s.SearchResults, s.SearchIn, errors=(404,),
       tag="knowledge", example=Example({"query": "who routes requests?", "k": 3}, path={"kb": "spec-docs"})),
    Op("DELETE", _KB + "/{kb}/documents/{doc_id}", "Delete a document", s.DeletedDocument, errors=(404,),
       tag="knowledge", example=Example(path={"kb": "spec-docs", "doc_id": "doc-1"})),
    # ---- operations -----------------------------------------------------------------------------------------
    Op("GET", "/healthz", "Liveness", s.Health, auth="none", tag="operations", example=Example()),
    Op("GET", "/readyz", "Readiness: every deployment loaded (503 while local models load)", s.Readiness,
       auth="none", tag="operations", example=Example()),
    Op("GET", "/metrics", "Prometheus metrics (every worker's, in one scrape)", None, auth="admin",
       media_type="text/plain; version=0.0.4", tag="operations", example=Example()),
    Op("GET", "/openapi.json", "This document (OpenAPI 3.1)", None, auth="none", tag="operations",
       example=Example()),
    Op("GET", "/docs", "A page that renders this document", None, auth="none", media_type="text/html",
       tag="operations", example=Example()),
    # ---- MCP: Portico as an MCP server for the tools a key may use (JSON-RPC errors, not OpenAI's shape) -----
    Op("POST", "/mcp", "Send an MCP message (initialize, tools/list, tools/call)", s.JsonRpcResponse,
       s.JsonRpcRequest, errors=(406,), empty=(202,), tag="mcp",
       error_models={400: s.JsonRpcResponse, 406: s.JsonRpcResponse},
       example=Example(_MCP_INIT, headers={"accept": "application/json, text/event-stream"})),
    Op("GET", "/mcp", "Server-to-client event stream: not offered, the server is stateless (always 405)",
       s.JsonRpcResponse, status=405, tag="mcp", example=Example(status=405)),
    Op("DELETE", "/mcp", "End a session: not supported, the server is stateless (always 405)", s.JsonRpcResponse,
       status=405, tag="mcp", example=Example(status=405)),
    # ---- admin ----------------------------------------------------------------------------------------------
    Op("POST", "/admin/keys", "Create a virtual key", s.CreatedKey, KeyCreate, status=201, auth="admin",
       tag="admin", example=Example({"name": "spec-key", "rpm": 60}, status=201, capture={"key_id": "id"})),
    Op("GET", "/admin/keys", "List keys", s.KeyList, auth="admin", tag="admin", example=Example()),
    Op("GET", "/admin/keys/{key_id}", "Get a key", s.Key, errors=(404,), auth="admin", tag="admin",
       example=Example(path={"key_id": "key_0123"})),
    Op("PATCH", "/admin/keys/{key_id}", "Change a key's limits or models", s.Key, KeyUpdate, errors=(404,),
       auth="admin", tag="admin", example=Example({"tpm": 10000}, path={"key_id": "key_0123"})),
    Op("DELETE", "/admin/keys/{key_id}", "Revoke a key", s.Key, errors=(404,), auth="admin", tag="admin",
       example=Example(path={"key_id": "key_0123"})),
    Op("GET", "/admin/usage", "Usage report", s.UsageReport, query=UsageQuery, errors=(400,), auth="admin",
       tag="admin", example=Example(query={"group_by": "model"})),
    Op("GET", "/admin/requests", "List stored request traces", s.TraceList, query=RequestsQuery, errors=(400,),
       auth="admin", tag="admin", example=Example(query={"limit": "5"})),
    Op("GET", "/admin/requests/{request_id}", "Get one request's trace", s.Trace, errors=(404,), auth="admin",
       tag="admin", example=Example(path={"request_id": "req-openapi-example"})),
    Op("GET", "/admin/stats", "Time series for the dashboard", s.Stats, query=StatsQuery, errors=(400,),
       auth="admin", tag="admin", example=Example(query={"group_by": "model"})),
    Op("POST", "/admin/handoffs", "Open a handoff to a human", s.Handoff, HandoffCreate, status=201, auth="admin",
       tag="admin", example=Example({"reason": "customer asked for a person"}, status=201,
                                    capture={"handoff_id": "id"})),
    Op("GET", "/admin/handoffs", "List handoffs, newest first", s.HandoffList, query=HandoffsQuery, errors=(400,),
       auth="admin", tag="admin", example=Example(query={"status": "open"})),
    Op("GET", "/admin/applications", "Configured applications (model, version, steps, experiment)",
       e.ApplicationList, auth="admin", tag="admin", example=Example()),
    Op("GET", "/admin/applications/{name}/pipeline", "An application's pipeline as a graph (steps, arms, loops)",
       e.PipelineGraph, errors=(404,), auth="admin", tag="admin", example=Example(path={"name": "helper"})),
    Op("GET", "/admin/tools", "Configured tools and the health of their sources", s.ToolList, auth="admin",
       tag="admin", example=Example()),
    Op("GET", "/admin/approvals", "List write actions waiting for (or past) a decision", s.ApprovalList,
       query=ApprovalsQuery, errors=(400,), auth="admin", tag="admin", example=Example(query={"status": "pending"})),
    Op("GET", "/admin/approvals/{approval_id}", "Get an action with its audit log", s.Approval, errors=(404,),
       auth="admin", tag="admin", example=Example(path={"approval_id": "apr_0123"}, status=404)),
    Op("POST", "/admin/approvals/{approval_id}/approve", "Approve an action (arguments may be edited)", s.Approval,
       Approve, errors=(404, 409), auth="admin", tag="admin",
       example=Example({"by": "ana"}, path={"approval_id": "apr_0123"}, status=404)),
    Op("POST", "/admin/approvals/{approval_id}/deny", "Deny an action", s.Approval, Deny, errors=(404, 409),
       auth="admin", tag="admin",
       example=Example({"reason": "not now"}, path={"approval_id": "apr_0123"}, status=404)),
    Op("GET", "/admin/handoffs/{handoff_id}", "Get a handoff with its conversation", s.Handoff, errors=(404,),
       auth="admin", tag="admin", example=Example(path={"handoff_id": "ho_0123"})),
    Op("POST", "/admin/handoffs/{handoff_id}", "Claim, resolve or annotate a handoff", s.Handoff, HandoffUpdate,
       errors=(404,), auth="admin", tag="admin",
       example=Example({"status": "claimed", "assignee": "ana"}, path={"handoff_id": "ho_0123"})),
]  # fmt: skip
